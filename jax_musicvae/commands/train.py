"""`musicvae train --config NAME|PATH.py --data DIR --workdir DIR [--set k=v] [--resume]`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a MusicVAE (one CPU to a TPU pod slice)",
        description=(
            "Train a config on a dataset built by `musicvae data build`. Every config "
            "field can be overridden with --set section.field=value (e.g. "
            "--set model.cell=gru --set train.num_steps=500). With --resume the run "
            "continues from the workdir's latest checkpoint, using the config stored "
            "there (plus any --set) unless --config is given."
        ),
    )
    p.add_argument("--config", help="a config file, or the NAME of one in jax_musicvae/configs/")
    p.add_argument("--data", required=True, help="dataset folder (musicvae data build --out)")
    p.add_argument("--workdir", required=True, help="checkpoints, logs and figures go here")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. optim.learning_rate=5e-4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.set_defaults(func=run)


def run_config(args: argparse.Namespace):
    """The run's config: --config or (on --resume) the checkpoint's, then --set."""
    from jax_musicvae import checkpoints as ckpt
    from jax_musicvae.config import ConfigError
    from jax_musicvae.experiment import ExperimentConfig, load_config

    if args.config:
        config = load_config(args.config)
    elif args.resume:
        stored, _ = ckpt.resolve(Path(args.workdir))
        manager = ckpt.make_manager(stored, read_only=True, async_saves=False)
        try:
            step = ckpt.choose_step(manager, None, best=False)
            config = ExperimentConfig.from_dict(ckpt.read_config(manager, step))
        finally:
            manager.close()
    else:
        raise ConfigError("--config is required unless --resume")
    return config.override(args.overrides)


def run(args: argparse.Namespace) -> int:
    from jax_musicvae.checkpoints import CheckpointError
    from jax_musicvae.config import ConfigError
    from jax_musicvae.train import TrainingError, train

    try:
        config = run_config(args)
        summary = train(config, Path(args.data), Path(args.workdir), resume=args.resume)
    except (ConfigError, CheckpointError, TrainingError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    report = {k: v for k, v in summary.items() if k != "params"}
    print(json.dumps(report, indent=2, default=float))
    return 0
