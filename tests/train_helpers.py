"""Shared by the trainer tests: a tiny melody dataset and a tiny hierarchical config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from test_dataset import make_songs

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig
from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.experiment import ExperimentConfig, LoggingConfig, TrainConfig


class Constant:
    """Danceability from the song number, so the condition is not constant."""

    def values(self, songs, rhythms):
        return {s.song_id: int(s.song_id[4:6]) / 100 for s in songs}


def build_tiny_dataset(root: Path) -> Path:
    """12 songs of 2-bar melody90 windows: 64 train and 32 validation windows."""
    make_songs(root / "midi", 12, bars=9)
    build_dataset(
        str(root / "midi"),
        root / "ds",
        BuildSettings(num_bars=2, split=(0.7, 0.3, 0.0), representation="melody90"),
        cache_dir=root / "cache",
        progress=False,
        danceability_source=Constant(),
    )
    return root / "ds"


def tiny_config(**train: object) -> ExperimentConfig:
    """A hierarchical LSTM with 8 hidden units, decoder conditioning, batch 8."""
    return ExperimentConfig(
        name="tiny",
        model=ModelConfig(
            encoder_hidden=8,
            encoder_layers=1,
            decoder_hidden=8,
            decoder_layers=1,
            latent_size=4,
            num_bars=2,
            steps_per_bar=16,
            input_depth=90,
            conditioning="decoder",
        ),
        loss=LossConfig(free_bits=1.0, max_beta=0.5, beta_rate=0.9),
        optim=OptimConfig(learning_rate=3e-3),
        train=dataclasses.replace(
            TrainConfig(
                batch_size=8,
                num_steps=6,
                eval_every=3,
                eval_batches=2,
                log_every=2,
                checkpoint_every=2,
                keep=2,
                num_reconstructions=2,
            ),
            **train,
        ),
        logging=LoggingConfig(progress_bar=False),
    )


def set_args(config: ExperimentConfig) -> list[str]:
    """`--set` arguments reproducing `config` from the default ExperimentConfig."""
    args = []
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            args += [f"{section}.{k}={v}" for k, v in values.items() if k != "path"]
        else:
            args.append(f"{section}={values}")
    return [a for pair in (("--set", a) for a in args) for a in pair]
