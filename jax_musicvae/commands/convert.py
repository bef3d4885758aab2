"""`musicvae convert SRC DST`: checkpoints between magenta-torch, torch, safetensors and orbax."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

# Literal here so that `musicvae --help` need not import jax; a test checks they match.
SOURCE_FORMATS = ("auto", "magenta-torch", "torch", "orbax")
TARGET_FORMATS = ("orbax", "torch", "safetensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between torch (magenta-torch, torch reference) and orbax",
        description="Reads SRC without executing anything in it (weights-only loading; "
        "whole pickled modules through inert stand-ins), infers the architecture from names "
        "and shapes unless a config travels with it, writes DST atomically and checks that "
        "torch and Flax agree on a probe batch (max |logits| difference <= 1e-4).",
    )
    parser.add_argument("src", type=Path, help="checkpoint file or directory")
    parser.add_argument("dst", type=Path, help="output file (torch, safetensors) or directory")
    parser.add_argument("--from", dest="source_format", choices=SOURCE_FORMATS, default="auto")
    parser.add_argument(
        "--to",
        dest="target",
        choices=TARGET_FORMATS,
        help="default from DST: .pt/.pth torch, .safetensors safetensors, else orbax",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config setting, e.g. model.conditioning=decoder or model.num_bars=4 (repeatable)",
    )
    parser.add_argument(
        "--trainer-states",
        type=Path,
        help="the original's trainer_states.pt (read when beside SRC anyway); reported only",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing DST")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jax_musicvae import checkpoints
    from jax_musicvae.config import ConfigError
    from jax_musicvae.conversion.parameters import ConversionError
    from jax_musicvae.conversion.pipeline import TOLERANCE, VerificationError, convert
    from jax_musicvae.conversion.torch_files import TorchFileError

    if not getattr(args, "verbose", False):
        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it touches
    try:
        report = convert(
            args.src,
            args.dst,
            source_format=args.source_format,
            target=args.target,
            sets=args.sets,
            force=args.force,
            verify=args.verify,
            trainer_states=args.trainer_states,
        )
    except VerificationError as err:
        print(f"error: {err}")
        return 1
    except (ConversionError, TorchFileError, ConfigError, checkpoints.CheckpointError) as err:
        print(f"error: {err}")
        return 2
    source = report.source
    kind = source.kind + (f" of {source.class_name}" if source.class_name else "")
    print(f"source: {source.path} ({source.format}, {kind})")
    for note in report.notes:
        print(f"  {note}")
    if source.trainer_states is not None:
        print(f"trainer states (not needed for the weights): {json.dumps(source.trainer_states)}")
    print(f"model config: {json.dumps(report.config.to_dict()['model'])}")
    print(f"wrote {report.target}: {report.destination}")
    if report.config_path is not None:
        print(f"wrote config: {report.config_path}")
    if report.max_abs_difference is None:
        print("verification skipped (--no-verify)")
    else:
        print(
            f"verification: max |torch - flax| teacher-forced logits = "
            f"{report.max_abs_difference:.3g} (tolerance {TOLERANCE:g}): ok"
        )
    return 0
