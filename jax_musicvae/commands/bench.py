"""`musicvae bench`: Flax vs torch throughput, alternated in one process (issue 7)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def _names(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="training and generation throughput of the Flax model and the torch reference",
        description="Times training steps (examples/s) and free-running generation "
        "(sequences/s) with the same weights and batches in every framework, alternating "
        "the frameworks step by step; writes bench.json, bench.md and bench.png.",
    )
    parser.add_argument(
        "--config",
        type=_names,
        action="extend",
        help="config name(s), comma-separated or repeated (default bench_small)",
    )
    parser.add_argument(
        "--batch",
        type=_ints,
        action="extend",
        help="batch size(s) for training (default 64)",
    )
    parser.add_argument(
        "--sample-batch", type=_ints, help="batch size(s) for generation (default: --batch)"
    )
    parser.add_argument(
        "--frameworks",
        type=_names,
        default=["jax", "torch", "torch-compile"],
        help="jax,torch,torch-compile",
    )
    parser.add_argument("--mode", type=_names, default=["train", "sample"], help="train,sample")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per framework")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps per framework after the compile step"
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument(
        "--no-flush-denormal",
        dest="flush_denormal",
        action="store_false",
        help="run torch on the CPU without flush-to-zero (shows the denormal penalty; "
        "XLA always flushes)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu"),
        default="auto",
        help="auto = CPU, plus GPU when both frameworks see one",
    )
    parser.set_defaults(func=run, one_device_per_core=True)


def run(args: argparse.Namespace) -> int:
    from jax_musicvae import bench

    bad = set(args.mode) - set(bench.MODES)
    if bad or args.repeats < 1 or args.warmup < 0:
        logger.error(
            "modes must be among %s, --repeats >= 1 and --warmup >= 0", ", ".join(bench.MODES)
        )
        return 2
    try:
        records = bench.run_benchmark(
            configs=args.config or ["bench_small"],
            batches=args.batch or [64],
            frameworks=args.frameworks,
            modes=args.mode,
            repeats=args.repeats,
            gpu=False if args.device == "cpu" else None,
            sample_batches=args.sample_batch,
            warmup=args.warmup,
            flush_denormal=args.flush_denormal,
        )
    except ValueError as error:
        logger.error("%s", error)
        return 2
    table = bench.write_outputs(records, args.out)
    print(table)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = bench.machine_info()
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores "
        f"({' '.join(machine['vector_extensions'])}); load average {load}; torch CPU "
        f"flush-to-zero {'on' if args.flush_denormal else 'off'}; written to {args.out}/bench.*"
    )
    return 0
