"""Helpers shared by the test modules (fixtures are in conftest.py).

MIDI files built note by note, tiny datasets and configurations, random checkpoints,
the CLI, and tree comparison. No test module imports another test module.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import symusic

from jax_musicvae import cli
from jax_musicvae.checkpoints import save_params_checkpoint
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig
from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.experiment import ExperimentConfig, LoggingConfig, TrainConfig
from jax_musicvae.models import init_params

MUSIC21_MIDI = Path(__import__("music21").__file__).parent / "midi" / "testPrimitive"
BARS = 2  # bars per window of the generation tests' models and dataset


def run_cli(*argv: object) -> int:
    """`musicvae ARGV...` in this process; returns the exit status."""
    return cli.main([str(a) for a in argv])


def write_midi_file(
    path: Path,
    tracks: list[tuple[int, bool, list[tuple[int, int, int]]]],
    *,
    tpq: int = 480,
    tempos: tuple[tuple[int, float], ...] = ((0, 120.0),),
    sigs: tuple[tuple[int, int, int], ...] = ((0, 4, 4),),
) -> Path:
    """A MIDI file from (program, is_drum, [(tick, duration, pitch)]) tracks."""
    score = symusic.Score(tpq)
    for t, q in tempos:
        score.tempos.append(symusic.Tempo(t, q))
    for t, n, d in sigs:
        score.time_signatures.append(symusic.TimeSignature(t, n, d))
    for program, drum, notes in tracks:
        track = symusic.Track("", program, drum)
        for tick, dur, pitch in notes:
            track.notes.append(symusic.Note(tick, dur, pitch, 90))
        score.tracks.append(track)
    path.write_bytes(score.dumps_midi())
    return path


def off_grid(meter: str, bar_steps: str, keeper: str) -> str:
    """The reason `midi_io` gives for a meter the duple grid does not keep."""
    return (
        f"meter {meter} (bar of {bar_steps} sixteenths, not on the duple grid; "
        f"--meter {keeper} keeps it)"
    )


def scale_notes(bars: int, tpq: int = 480, base: int = 60) -> list[tuple[int, int, int]]:
    """Eighth notes walking up a 13-note pattern: every bar has notes, bars differ."""
    step = tpq // 2
    return [(i * step, step, base + (i % 13)) for i in range(bars * 8)]


def make_songs(folder: Path, count: int, bars: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_midi_file(folder / f"song{i:02d}.mid", [(0, False, scale_notes(bars, base=40 + i))])
        for i in range(count)
    ]


def assert_trees_equal(a, b) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def tiny_model_experiment(conditioning: str, **changes) -> ExperimentConfig:
    fields = dict(
        encoder_hidden=8,
        encoder_layers=1,
        decoder_hidden=8,
        decoder_layers=1,
        latent_size=4,
        num_bars=BARS,
        input_depth=90,
        conditioning=conditioning,
    )
    return ExperimentConfig(name=f"tiny-{conditioning}", model=ModelConfig(**{**fields, **changes}))


def random_params(config: ModelConfig, seed: int = 0):
    """Random parameters with init_params' tree and shapes (eval_shape: nothing compiles).

    Uniform in [-0.3, 0.3]: varied output, and inputs such as c still move the result
    (wider weights saturate the LSTMs of so small a model).
    """
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.uniform(-0.3, 0.3, s.shape).astype(s.dtype), shapes)


def make_checkpoint(path: Path, conditioning: str, seed: int = 0) -> Path:
    experiment = tiny_model_experiment(conditioning)
    save_params_checkpoint(path, random_params(experiment.model, seed), experiment.to_dict())
    return path


def make_controllable_checkpoint(path: Path, seed: int = 3) -> Path:
    """A random conditioning-'none' model whose latent dimension 0 carries danceability."""
    experiment = tiny_model_experiment("none")
    quantiles = tuple(float(q) for q in np.linspace(0.2, 0.9, 11))
    experiment = dataclasses.replace(
        experiment, loss=LossConfig(attribute_loss="sign", attribute_quantiles=quantiles)
    )
    save_params_checkpoint(path, random_params(experiment.model, seed), experiment.to_dict())
    return path


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
