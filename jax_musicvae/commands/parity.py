"""`musicvae parity`: run the Flax-vs-torch parity suite and print its table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from jax_musicvae.atomic import atomic_file

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parity",
        help="check that the Flax model and the torch reference agree",
        description="Runs every check for every cell x conditioning x wiring combination "
        "on CPU, and on GPU too when both frameworks see one. Exits 1 on any failure.",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto = CPU, plus GPU when present",
    )
    parser.add_argument("--only", help="run combinations whose name contains this text")
    parser.set_defaults(func=run)


def format_table(results: list) -> str:
    header = ("device", "check", "combination", "max error", "tolerance", "pass")
    rows = [
        (
            r.device,
            r.check,
            r.combination,
            f"{r.max_error:.3g}",
            f"{r.tolerance:.0e}",
            "yes" if r.passed else "NO",
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from jax_musicvae import parity as suite

    devices = suite.available_devices() if args.device == "auto" else [args.device]
    combos = [c for c in suite.combinations() if not args.only or args.only in c.name]
    if not combos:
        logger.error("no combination matches --only %r", args.only)
        return 2
    results = []
    for device in devices:
        for combo in combos:
            logger.info("parity %s on %s", combo.name, device)
            results.extend(suite.run_combination(combo, device))
    print(format_table(results))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed on {', '.join(devices)}")
    if args.json:
        with atomic_file(args.json, "w") as handle:
            json.dump([dataclasses.asdict(r) for r in results], handle, indent=1)
    return 1 if failed else 0
