"""The `musicvae` command line: one sub-command per module in jax_musicvae.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jax_musicvae.host_memory import keep_freed_memory

# Sub-command modules, imported lazily so `musicvae --help` stays fast.
COMMAND_MODULES = (
    "parity",
    "data",
    "convert",
    "train",
    "generate",
    "serve",
    "bench",
    "quickstart",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicvae", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"jax_musicvae.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # before any computation starts XLA's or torch's threads
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # orbax logs every checkpoint handler it creates through absl
        logging.getLogger("absl").setLevel(logging.ERROR)
    if getattr(args, "one_device_per_core", False):  # commands that decode on the CPU
        from jax_musicvae.cpu_devices import use_one_device_per_core

        use_one_device_per_core()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
