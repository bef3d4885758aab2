"""`musicvae quickstart --out DIR`: the README's one command, corpus to MIDI samples.

Builds `corpus:folk-small` as 4-bar melody90 windows (cached in DIR/data and in the
corpus cache), trains `cpu_small` for a bounded time (resuming if DIR/run exists),
measures reconstruction on a fixed random sample of validation windows (against the
most-frequent-token baseline of the same windows) and the validity of prior
samples, and writes samples from the prior as MIDI files and piano-roll PNGs, plus
the training curves and pictures of reconstructions and an interpolation.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jax_musicvae.generate import TrainedModel

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="build the folk corpus, train cpu_small, write MIDI samples and plots",
        description=__doc__,
    )
    p.add_argument("--out", required=True, help="folder for data, run, samples and plots")
    p.add_argument("--minutes", type=float, default=10.0, help="training time limit")
    p.add_argument("--samples", type=int, default=8, help="number of samples from the prior")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", default="corpus:folk-small")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def build_data(source: str, out: Path, num_bars: int, seed: int) -> Path:
    """The dataset folder, built once (a finished build leaves a manifest.json)."""
    from jax_musicvae.data.dataset import BuildSettings, build_dataset

    if (out / "manifest.json").is_file():
        logger.info("using the dataset in %s", out)
        return out
    settings = BuildSettings(representation="melody90", num_bars=num_bars, seed=seed)
    build_dataset(source, out, settings, workers=2, overwrite=out.exists())
    return out


def write_samples(
    model: TrainedModel, out: Path, count: int, temperature: float, seed: int
) -> list[Path]:
    """Decode z ~ N(0, I) at `temperature` into MIDI files and piano-roll PNGs."""
    from jax_musicvae.data.pianoroll import save_pianoroll, save_pianoroll_grid

    representation, grid = model.representation, model.grid
    tokens = model.sample(count, temperature=temperature, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, sample in enumerate(tokens):
        written.append(model.write_midi(sample, out / f"sample_{i:02d}.mid"))
        picture = out / f"sample_{i:02d}.png"
        written.append(
            save_pianoroll(sample, representation, picture, title=f"sample {i}", grid=grid)
        )
    written.append(
        save_pianoroll_grid(list(tokens), representation, out / "samples.png", grid=grid)
    )
    return written


def fit_map(model: TrainedModel, data: Path, seed: int) -> dict | None:
    """Fit the model's danceability map, store it in its step folder (where `musicvae
    sample/edit/serve` find it) and give it to `model`; None for a model without an
    attribute dimension."""
    from jax_musicvae.danceability_map import MAP_FILE, fit_danceability_map

    if model.attribute_dimension is None:
        return None
    fitted = fit_danceability_map(model, data, seed=seed)
    fitted.save(model.checkpoint_dir / MAP_FILE)
    model.danceability_map = fitted
    return {"path": str(model.checkpoint_dir / MAP_FILE), "centre": fitted.centre}


def write_edit(model: TrainedModel, data: Path, out: Path, seed: int) -> dict | None:
    """One held-out window edited to a low and a high danceability (the 10th and 90th
    percentiles of the training windows' rhythm estimate): MIDI files and one picture.
    None when the model cannot take a danceability request."""
    from jax_musicvae.data.pianoroll import save_pianoroll_grid
    from jax_musicvae.data.source import WindowSource

    if not model.controllable:
        logger.info("%s cannot take a danceability request: no edit written", model.label)
        return None
    rep = model.representation
    low, high = np.quantile(WindowSource(data, "train").window_danceability, [0.1, 0.9])
    held_out = WindowSource(data, "validation")
    source = np.asarray(held_out.tokens[np.random.default_rng(seed).integers(len(held_out))])
    out.mkdir(parents=True, exist_ok=True)
    melodies = {"source": source}
    for name, target in (("low", low), ("high", high)):
        melodies[name] = model.edit(source, float(target), seed=seed)
    report, titles = {}, []
    for name, tokens in melodies.items():
        model.write_midi(tokens, out / f"{name}.mid")
        value = model.danceability_of(tokens)
        kept = float(np.mean(tokens == source))
        requested = {"low": low, "high": high}.get(name)
        report[name] = {
            "requested": None if requested is None else float(requested),
            "measured": value,
            "tokens_kept": kept,
        }
        title = f"{name}: danceability {value:.2f}"
        if requested is not None:
            title += f" (asked {requested:.2f}, {kept:.0%} of tokens kept)"
        titles.append(title)
    rolls = list(melodies.values())
    picture = save_pianoroll_grid(
        rolls, rep, out / "edit.png", titles=titles, columns=1, grid=model.grid
    )
    report["png"] = str(picture)
    return report


def measure(model: TrainedModel, out: Path, temperature: float, seed: int) -> dict:
    """Reconstruction and sample quality of `model` on held-out windows, with pictures
    out/held_out_{reconstructions,interpolation}.png."""
    from jax_musicvae.analysis import AnalysisSettings, held_out_windows, reconstruction_quality

    settings = AnalysisSettings(
        split="validation", max_windows=512, prior_temperature=temperature, seed=seed
    )
    data = out / "data"
    windows, danceability = held_out_windows(model, data, settings)
    return reconstruction_quality(
        model, data, windows, danceability, settings, pictures=out / "held_out"
    )


def run(args: argparse.Namespace) -> int:
    from jax_musicvae.atomic import atomic_write
    from jax_musicvae.checkpoints import CheckpointError
    from jax_musicvae.config import ConfigError
    from jax_musicvae.experiment import load_config
    from jax_musicvae.generate import TrainedModel
    from jax_musicvae.train import TrainingError, train

    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    try:
        config = load_config("cpu_small").override(
            [f"train.max_seconds={args.minutes * 60}", f"train.seed={args.seed}", *args.overrides]
        )
        data = build_data(args.corpus, out / "data", config.model.num_bars, args.seed)
        workdir = out / "run"
        resume = (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir())
        summary = train(config, data, workdir, resume=resume)
        # The model the run ended with: with a free-bits budget the KL keeps growing
        # toward it while reconstruction improves, so the best ELBO is an earlier step.
        model = TrainedModel.load(workdir)
        danceability_map = fit_map(model, data, args.seed)
        samples = write_samples(model, out / "samples", args.samples, args.temperature, args.seed)
        quality = measure(model, out, args.temperature, args.seed)
        edit = write_edit(model, data, out / "edit", args.seed)
    except (ConfigError, CheckpointError, TrainingError, RuntimeError, ValueError) as error:
        logger.error("%s", error)
        return 1
    for path in summary["figures"].values():
        shutil.copyfile(path, out / Path(path).name)
    report = {
        "steps": summary["step"],
        "train_seconds": round(summary["seconds"], 1),
        "held_out": quality,
        "danceability_map": danceability_map,
        "danceability_edit": edit,
        "last_training_evaluation": summary["eval"],
    }
    atomic_write(out / "report.json", json.dumps(report, indent=2) + "\n")
    midi = sorted(p for p in samples if p.suffix == ".mid")
    q = quality
    print(
        f"\nTrained cpu_small for {summary['step']} steps. On {q['windows']} random validation "
        f"windows: greedy reconstruction from mu {q['greedy_accuracy']:.3f} (codes shuffled "
        f"across them {q['shuffled_accuracy']:.3f}), teacher-forced accuracy "
        f"{q['accuracy']:.3f}; the most frequent token alone scores "
        f"{q['baseline_accuracy']:.3f}. Valid samples at temperature {args.temperature}: "
        f"{q['prior_valid_refined']:.1%} (`musicvae sample`: one decode-encode round; the "
        f"plain decoding of prior codes {q['prior_valid']:.1%}; real windows "
        f"{q['real_valid']:.1%}).\n"
        f"  reconstructions: {out / 'held_out_reconstructions.png'}   interpolation: "
        f"{out / 'held_out_interpolation.png'}\n"
        f"  {len(midi)} MIDI samples and piano rolls: {out / 'samples'}\n"
        + (
            f"  a held-out melody made less and more danceable (danceability "
            f"{edit['source']['measured']:.2f} -> {edit['low']['measured']:.2f} and "
            f"{edit['high']['measured']:.2f}): {out / 'edit'}\n"
            if edit
            else ""
        )
        + f"  curves: {out / 'curves.png'}\n"
        f"  checkpoints and TensorBoard logs: {workdir}\n  report: {out / 'report.json'}\n"
        f"Hear and shape melodies in the browser:\n"
        f"  musicvae serve --checkpoint {workdir} --data {data}"
    )
    return 0
