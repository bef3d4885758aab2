"""The thesis's quantitative comparison of trained models on one held-out split.

Per model, on a fixed random sample of held-out windows spread over all songs of
the split: ELBO, KL in bits, teacher-forced accuracy, greedy (argmax) reconstruction
accuracy from mu and from mu shuffled across the sample (how much the code
matters), the most-frequent-token baseline of the same windows, the validity of
prior samples and of real windows (`data.melody_stats`), interpolation smoothness,
and *control*: for requested danceabilities (by default the nine deciles of the
training windows' rhythm estimate), the measures of `control.py` on melodies
generated from the same prior codes and on held-out melodies edited to each value.
Output: Markdown tables, JSON, per-model control curves, a 2-D PCA of mu, and per
model piano rolls of held-out windows beside their reconstructions, of an
interpolation and of one window's edits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jax_musicvae.atomic import atomic_write
from jax_musicvae.attributes import window_danceability
from jax_musicvae.code_probe import code_without, probe_rho
from jax_musicvae.config import check_positive
from jax_musicvae.control import control_measures, edit_keeps, rhythm_estimates
from jax_musicvae.data.dance_classifier import DanceClassifier, fit_dance_classifier
from jax_musicvae.data.melody_stats import ValidityBounds, interpolation_smoothness
from jax_musicvae.data.pianoroll import save_pianoroll_grid
from jax_musicvae.data.rhythm import window_danceability_estimates
from jax_musicvae.data.source import WindowSource, dataset_mismatch, most_frequent_token
from jax_musicvae.generate import CheckpointMismatchError, GenerationError, TrainedModel

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """How much to measure; the defaults take minutes per 16-bar model on one GPU."""

    split: str = "test"
    max_windows: int = 256
    samples_per_value: int = 32
    edit_windows: int = 32
    temperature: float = 0.0
    seed: int = 0
    values: tuple[float, ...] = ()  # requested danceabilities; () = `control_values`' deciles
    prior_samples: int = 256
    prior_temperature: float = 0.5
    interpolation_pairs: int = 16
    interpolation_steps: int = 7
    picture_windows: int = 4
    refine: int = 0  # decode-encode rounds of the control's generated and edited melodies
    probe_windows: int = 8000  # training windows the code probe (`code_probe`) is fitted on
    emphasis: float = 1.0  # requests as median + emphasis * (c - median) (`TrainedModel`)
    aim: bool | None = None  # requests aimed with the rhythm decoder (None: where it can)
    keep_source: bool = False  # edits keep the source where the request changes nothing

    def __post_init__(self) -> None:
        for name in (
            "max_windows",
            "samples_per_value",
            "edit_windows",
            "prior_samples",
            "interpolation_pairs",
            "picture_windows",
            "probe_windows",
        ):
            check_positive(name, getattr(self, name))
        if self.interpolation_steps < 2:
            raise ValueError(f"interpolation_steps={self.interpolation_steps} must be >= 2")
        if self.refine < 0:
            raise ValueError(f"refine={self.refine} must be >= 0")
        if self.prior_temperature < 0:
            raise ValueError(f"prior_temperature={self.prior_temperature} must be >= 0")


def check_dataset(model: TrainedModel, data: str | Path, source: WindowSource) -> None:
    """The dataset's representation and window length must be the model's."""
    config = model.config
    problem = dataset_mismatch(
        source.manifest, config.input_depth, config.sequence_length, config.steps_per_bar
    )
    if problem:
        raise CheckpointMismatchError(f"{model.label} does not fit dataset {data}: {problem}")


def control_values(data: str | Path, settings: AnalysisSettings) -> tuple[float, ...]:
    """The requested danceabilities: `settings.values`, or by default the nine deciles
    (10th ... 90th percentile) of the rhythm estimate of the training windows, so every
    request lies inside the range the measure takes on real melodies."""
    if settings.values:
        return tuple(float(v) for v in settings.values)
    estimates = WindowSource(data, "train").window_danceability
    return tuple(round(float(q), 4) for q in np.quantile(estimates, np.linspace(0.1, 0.9, 9)))


def _control(
    model: TrainedModel,
    settings: AnalysisSettings,
    windows: np.ndarray,
    values: tuple[float, ...],
    bounds: ValidityBounds,
    pictures: Path | None = None,
    classifier: DanceClassifier | None = None,
) -> dict[str, Any]:
    """`control.control_measures` of generated and edited melodies, and what edits keep.

    Generated melodies decode the same prior codes (one seed) at every requested
    value, so each code is a paired traversal; edits start from held-out `windows`.
    With `pictures` (a path prefix), PREFIX_edits.png shows the first window and its
    edit to every requested value.
    """
    rep, n = model.representation, settings.samples_per_value
    generated = edited = None
    curves: dict[str, list[float] | None] = {"generated": None, "edited": None, "keeps": None}
    keeps: dict[str, float | None] = {"keeps": None, "keeps_small_change": None}
    try:
        tokens = np.stack(
            [
                model.sample(n, v, settings.temperature, settings.seed, settings.refine)
                for v in values
            ]
        )
    except GenerationError as error:  # encoder, or none without an attribute vector
        logger.info("%s: no generated control: %s", model.label, error)
    else:
        generated = control_measures(
            values, tokens, rep, bounds, settings.seed, model.grid, classifier
        )
        curves["generated"] = generated["curve"]
    try:
        outputs = [
            np.stack(
                model.edit(
                    windows,
                    v,
                    temperature=settings.temperature,
                    seed=settings.seed,
                    refine=settings.refine,
                    keep_source=settings.keep_source,
                )
            )
            for v in values
        ]
    except GenerationError as error:  # none without an attribute vector
        logger.info("%s: no edit control: %s", model.label, error)
    else:
        outputs = np.stack(outputs)
        edited = control_measures(
            values, outputs, rep, bounds, settings.seed, model.grid, classifier
        )
        source = rhythm_estimates(windows, rep, model.grid)["full"]
        keeps = edit_keeps(values, source, windows, outputs)
        curves["edited"] = edited["curve"]
        curves["keeps"] = [float(np.mean(o == windows)) for o in outputs]
        if pictures is not None:
            _edit_picture(windows[0], outputs[:, 0], values, model, f"{pictures}_edits.png")
    return {
        "control_generated": generated["rho"] if generated else None,
        "control_edited": edited["rho"] if edited else None,
        "edit_keeps": keeps["keeps"],
        "edit_keeps_small_change": keeps["keeps_small_change"],
        "generated": generated,
        "edited": edited,
        "curves": curves,
    }


def _edit_picture(
    window: np.ndarray,
    edits: np.ndarray,
    values: Sequence[float],
    model: TrainedModel,
    path: str,
) -> Path:
    """One held-out window and its edits to each requested danceability, one per row."""
    rep, grid = model.representation, model.grid
    measured = rhythm_estimates(np.concatenate([window[None], edits]), rep, grid)["full"]
    titles = [f"held-out window (danceability {measured[0]:.2f})"]
    titles += [
        f"asked {v:.2f}: measured {m:.2f}, {np.mean(e == window):.0%} of tokens kept"
        for v, m, e in zip(values, measured[1:], edits, strict=True)
    ]
    return save_pianoroll_grid([window, *edits], rep, path, titles=titles, columns=1, grid=grid)


def _reconstruction(
    model: TrainedModel,
    data: str | Path,
    windows: np.ndarray,
    settings: AnalysisSettings,
    pictures: Path | None,
) -> dict[str, Any]:
    """Baseline, validity of prior samples and real windows, interpolation smoothness;
    with `pictures` (a path prefix), the reconstruction and interpolation piano rolls."""
    rep = model.representation
    most_frequent = most_frequent_token(data, "train")
    bounds = ValidityBounds.fit(WindowSource(data, "train").tokens, rep)
    # Validity of the plain decoding of prior codes and of `sample`'s default (one
    # decode-encode round), from the same codes.
    plain, refined = (
        model.sample(
            settings.prior_samples,
            temperature=settings.prior_temperature,
            seed=settings.seed,
            refine=rounds,
        )
        for rounds in (0, 1)
    )
    half = len(windows) // 2
    pairs = min(settings.interpolation_pairs, half)
    paths = np.stack(
        [
            model.interpolate(windows[i], windows[half + i], settings.interpolation_steps)
            for i in range(pairs)
        ]
    )
    result = {
        "baseline_accuracy": float(np.mean(windows == most_frequent)),
        "prior_valid": float(np.mean(bounds.valid(plain, rep))),
        "prior_valid_refined": float(np.mean(bounds.valid(refined, rep))),
        "real_valid": float(np.mean(bounds.valid(windows, rep))),
        "validity_bounds": bounds.to_dict(),
        "interpolation_smoothness": interpolation_smoothness(paths) if pairs else None,
    }
    if pictures is not None:
        count = min(settings.picture_windows, len(windows))
        rebuilt = model.reconstruct(windows[:count])
        sequences, titles = [], []
        for i in range(count):
            sequences += [windows[i], rebuilt[i]]
            titles += [f"held-out {i}", f"reconstruction {i}"]
        result["reconstruction_png"] = str(
            save_pianoroll_grid(
                sequences, rep, f"{pictures}_reconstructions.png", titles=titles, grid=model.grid
            )
        )
        if pairs:
            steps = settings.interpolation_steps
            result["interpolation_png"] = str(
                save_pianoroll_grid(
                    list(paths[0]),
                    rep,
                    f"{pictures}_interpolation.png",
                    titles=[f"step {k} of {steps - 1}" for k in range(steps)],
                    grid=model.grid,
                    columns=1,
                )
            )
    return result


def held_out_windows(
    model: TrainedModel, data: str | Path, settings: AnalysisSettings
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random sample (`settings.seed`) of at most `max_windows` windows of the
    split, drawn from all of its songs, in random order, and their danceability [N]."""
    source = WindowSource(data, settings.split, model.experiment.data.danceability)
    check_dataset(model, data, source)
    if len(source) == 0:
        raise GenerationError(f"{data}: split {settings.split!r} has no windows")
    # Random order, not sorted: neighbours in a split are overlapping windows of one
    # song, and "mu shuffled" pairs each window with the next one of the sample.
    rng = np.random.default_rng(settings.seed)
    index = rng.permutation(len(source))[: settings.max_windows]
    windows = np.asarray(source.tokens[index], np.int32)
    danceability = window_danceability(
        windows, source.condition[index], model.representation, model.grid
    )
    return windows, danceability


def reconstruction_quality(
    model: TrainedModel,
    data: str | Path,
    windows: np.ndarray,
    danceability: np.ndarray,
    settings: AnalysisSettings,
    pictures: Path | None = None,
) -> dict[str, Any]:
    """How well the model reconstructs held-out `windows` (from `held_out_windows`) and
    how plausible its samples are.

    With `pictures` (a path prefix) also writes PREFIX_reconstructions.png and
    PREFIX_interpolation.png.
    """
    logger.info("%s: evaluating %d %s windows", model.label, len(windows), settings.split)
    metrics = model.evaluate(windows, danceability, settings.seed)
    return {
        "split": settings.split,
        "windows": len(windows),
        "elbo": metrics["elbo"],
        "kl_bits": metrics["kl_bits"],
        "accuracy": metrics["accuracy"],
        "sampled_accuracy": metrics["sampled_accuracy"],
        "greedy_accuracy": metrics["greedy_accuracy"],
        "shuffled_accuracy": metrics["shuffled_accuracy"],
        **_reconstruction(model, data, windows, settings, pictures),
    }


def code_probe(
    model: TrainedModel,
    data: str | Path,
    settings: AnalysisSettings,
    windows: np.ndarray,
    mu: np.ndarray,
) -> float | None:
    """`code_probe.probe_rho` of mu without the regularised dimension: fitted on
    `probe_windows` training windows, scored on the held-out `windows` (their `mu`),
    the target being each window's own rhythm estimate; None where every held-out window
    (or every prediction) is the same, so there is no rank order."""
    source = WindowSource(data, "train", model.experiment.data.danceability)
    rng = np.random.default_rng(settings.seed)
    index = np.sort(rng.permutation(len(source))[: settings.probe_windows])
    train_windows = np.asarray(source.tokens[index], np.int32)
    condition = window_danceability(
        train_windows, source.condition[index], model.representation, model.grid
    )
    train_mu = model.encode(train_windows, condition, settings.seed).mu
    dimension = model.attribute_dimension
    rho = probe_rho(
        code_without(train_mu[:, : model.config.head_size], dimension),
        np.asarray(source.window_danceability[index]),
        code_without(mu, dimension),
        window_danceability_estimates(windows, model.representation, model.grid),
        settings.seed,
    )
    return rho if math.isfinite(rho) else None


def analyze_model(
    model: TrainedModel,
    data: str | Path,
    settings: AnalysisSettings,
    pictures: Path | None = None,
    classifier: DanceClassifier | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(results, mu [N, head_size], danceability [N]) of one model on one split;
    `classifier` adds the dance-vs-air estimator to the control measures."""
    windows, danceability = held_out_windows(model, data, settings)
    quality = reconstruction_quality(model, data, windows, danceability, settings, pictures)
    mu = model.encode(windows, danceability, settings.seed).mu[:, : model.config.head_size]
    logger.info("%s: fitting the code probe", model.label)
    probe = code_probe(model, data, settings, windows, mu)
    values = control_values(data, settings)
    bounds = ValidityBounds.from_dict(quality["validity_bounds"])
    results = {
        "model": model.label,
        "name": model.experiment.name,
        "conditioning": model.config.conditioning,
        "danceability_level": model.experiment.data.danceability,
        "attribute_loss": model.experiment.loss.attribute_loss,
        "danceability_map": model.danceability_map is not None,
        "emphasis": model.emphasis,
        "aim": model.aim,
        **quality,
        "code_probe_rho": probe,
        "values": list(values),
        **_control(
            model, settings, windows[: settings.edit_windows], values, bounds, pictures, classifier
        ),
    }
    return results, mu, danceability


def _cell(value: float | None, measured: bool = True) -> str:
    """n/a: the model cannot take the request; const.: every result had the same estimate."""
    if value is not None:
        return f"{value:.3f}"
    return "const." if measured else "n/a"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per model; n/a and const. as in `_cell` (a constant side has no rank order)."""
    header = (
        "| model | conditioning | windows | ELBO | KL (bits) | accuracy (teacher forced) | "
        "accuracy (sampled) | control ρ (generated) | control ρ (edited) | edit keeps | "
        "danceability in the rest of the code (probe ρ) |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['conditioning']} | {r['windows']} | {r['elbo']:.2f} | "
            f"{r['kl_bits']:.2f} | {r['accuracy']:.3f} | {r['sampled_accuracy']:.3f} | "
            f"{_cell(r['control_generated'], bool(r['curves']['generated']))} | "
            f"{_cell(r['control_edited'], bool(r['curves']['edited']))} | "
            f"{_cell(r['edit_keeps'], False)} | {_cell(r['code_probe_rho'])} |"
        )
    lines += [
        "",
        "| model | most frequent token | teacher forced | greedy from mu | greedy, mu shuffled "
        "| KL (bits) | valid prior samples | the same, refined once | valid real windows "
        "| interpolation smoothness |",
        "|" + "---|" * 10,
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['baseline_accuracy']:.3f} | {r['accuracy']:.3f} | "
            f"{r['greedy_accuracy']:.3f} | {r['shuffled_accuracy']:.3f} | {r['kl_bits']:.1f} | "
            f"{r['prior_valid']:.3f} | {r['prior_valid_refined']:.3f} | {r['real_valid']:.3f} | "
            f"{_cell(r['interpolation_smoothness'], False)} |"
        )
    lines += [
        "",
        "| model | kind | ρ [95% interval] | traversal R² | calibration error | "
        "spread at one request | valid | distinct outputs | weakest held-out ρ | "
        "dance-vs-air ρ | mean pitch kept | pitch classes kept | keeps (change ≤ 0.3) |",
        "|" + "---|" * 13,
    ]
    for r in results:
        for kind in ("generated", "edited"):
            m = r.get(kind)
            if not m:
                continue
            keeps = r["edit_keeps_small_change"] if kind == "edited" else None
            kept = m["restrictiveness"]
            lines.append(
                f"| {r['model']} | {kind} | {_cell(m['rho'])} "
                f"[{_cell(m['rho_low'])}, {_cell(m['rho_high'])}] | {m['linearity']:.3f} | "
                f"{m['calibration_error']:.3f} | {m['consistency_std']:.3f} | "
                f"{m['validity']:.3f} | {m['diversity']:.3f} | "
                f"{_cell(m['held_out_rho_min'])} | {_cell(m.get('classifier_rho'), False)} | "
                f"{_cell(kept['mean_pitch'], False)} | "
                f"{_cell(kept['pitch_classes'], False)} | {_cell(keeps, False)} |"
            )
    return "\n".join(lines) + "\n"


def plot_control(results: list[dict[str, Any]], path: Path) -> Path:
    """One panel per model: mean measured danceability against the requested value,
    for generated (solid) and edited (dashed) melodies, with the line measured =
    requested."""
    columns = min(4, len(results))
    rows = math.ceil(len(results) / columns)
    fig = Figure(figsize=(3.4 * columns, 3.0 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, r in zip(axes, results, strict=False):
        values = r["values"]
        ax.plot(values, values, ":", color="grey", label="measured = requested")
        for kind, style in (("generated", "-o"), ("edited", "--s")):
            curve = r["curves"][kind]
            if curve:
                ax.plot(values, curve, style, markersize=3, label=kind)
        ax.set_title(f"{Path(r['model']).name} ({r['conditioning']})", fontsize=8)
        ax.set_xlabel("requested danceability", fontsize=8)
        ax.set_ylabel("rhythm estimate (mean)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(results) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection of rows onto their two principal axes (zeros for missing ones)."""
    centred = np.asarray(x, np.float64) - np.mean(x, 0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def plot_mu_pca(
    results: list[dict[str, Any]], mus: list[np.ndarray], colours: list[np.ndarray], path: Path
) -> Path:
    """One panel per model: mu of the held-out windows, PCA to 2-D, coloured by danceability."""
    fig = Figure(figsize=(4.2 * len(results), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, r, mu, c in zip(axes, results, mus, colours, strict=True):
        points = pca_2d(mu)
        scatter = ax.scatter(
            points[:, 0], points[:, 1], c=c, cmap="viridis", s=10, vmin=0.0, vmax=1.0
        )
        ax.set_title(f"{r['model']} ({r['conditioning']})", fontsize=8)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        fig.colorbar(scatter, ax=ax, label="danceability")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def analyze(
    checkpoints: Sequence[str | Path],
    data: str | Path,
    out: str | Path,
    settings: AnalysisSettings = AnalysisSettings(),  # noqa: B008 (frozen, immutable)
    *,
    batch_size: int = 64,
) -> dict[str, Path]:
    """Analyse every checkpoint on the same split; write results.{md,json}, control/mu plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, mus, colours = [], [], []
    fitted = fit_dance_classifier(data, settings.seed)
    for index, checkpoint in enumerate(checkpoints):
        model = TrainedModel.load(checkpoint, batch_size=batch_size, emphasis=settings.emphasis)
        model.aim = model.can_aim and settings.aim is not False  # the others cannot aim
        result, mu, danceability = analyze_model(
            model,
            data,
            settings,
            pictures=out / f"model{index}",
            classifier=fitted.classifier if fitted else None,
        )
        results.append(result)
        mus.append(mu)
        colours.append(danceability)
    table = markdown_table(results)
    if fitted:
        table += (
            f"\nDance-vs-air classifier (`data.dance_classifier`): fitted on "
            f"{fitted.training_windows} labelled training windows, validation ROC AUC "
            f"{fitted.validation_auc:.3f} on {fitted.validation_windows} windows.\n"
        )
    paths = {
        "table": out / "results.md",
        "json": out / "results.json",
        "control": out / "control.png",
        "mu_pca": out / "mu_pca.png",
    }
    atomic_write(paths["table"], table)
    atomic_write(
        paths["json"],
        json.dumps(
            {
                "data": str(data),
                "settings": dataclasses.asdict(settings),
                "dance_classifier": {
                    "training_windows": fitted.training_windows,
                    "validation_windows": fitted.validation_windows,
                    "validation_auc": fitted.validation_auc,
                }
                if fitted
                else None,
                "models": results,
            },
            indent=1,
        ),
    )
    plot_control(results, paths["control"])
    plot_mu_pca(results, mus, colours, paths["mu_pca"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
