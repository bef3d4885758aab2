"""How well a model honours a requested danceability, measured on its decoded melodies.

Every measure here reads the tokens a model decodes, never its latent code, and
is built so that a model cannot score well by gaming the rhythm estimate
(docs/danceability-control.md):

- generated melodies come from the *same* prior codes for every requested value
  (one seed), so each code gives a paired traversal;
- pooled Spearman rho between requested and measured danceability, with a 95%
  bootstrap interval that resamples whole traversals;
- linearity: per traversal, R^2 of measured against requested (mean over codes);
- calibration: mean |measured - requested| (the requests lie in the training range);
- consistency: the spread of measured values across codes at one request;
- restrictiveness: how much mean pitch, pitch range and the pitch-class histogram
  move along a traversal, against how much they differ between codes;
- validity (`data.melody_stats`) and diversity (share of distinct outputs per
  request: a fixed pattern per value would score rho = 1 and must fail here);
- held-out estimators: rho under every leave-one-feature-out variant of the
  rhythm estimate (the weakest is reported), so control that rests on one
  feature (e.g. note density alone) shows; and rho against P(dance) of a
  dance-vs-air classifier fitted on the corpus's labelled windows
  (`data.dance_classifier`), which no model trains on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jax_musicvae.data.dance_classifier import DanceClassifier
from jax_musicvae.data.melody_stats import ValidityBounds
from jax_musicvae.data.meters import DEFAULT_GRID, Grid
from jax_musicvae.data.representations import Representation
from jax_musicvae.data.rhythm import WEIGHTS, estimate_danceability, melody_rhythm
from jax_musicvae.statistics import spearman

BOOTSTRAP_DRAWS = 1000
EDIT_CHANGE_LIMIT = 0.3  # edits whose request is this close to the source: "keeps" is read here


def rhythm_estimates(
    tokens: np.ndarray, rep: Representation, grid: Grid = DEFAULT_GRID
) -> dict[str, np.ndarray]:
    """Per melody [N, T]: the rhythm estimate (`full`) and each leave-one-feature-out
    variant (`without_<feature>`), on the melodies' bar grid."""
    rhythms = [melody_rhythm(t, rep, grid=grid) for t in tokens]
    out = {"full": np.array([estimate_danceability(r) for r in rhythms])}
    for left_out in WEIGHTS:
        out[f"without_{left_out}"] = np.array(
            [estimate_danceability(r, without=left_out) for r in rhythms]
        )
    return out


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _pooled_rho(requested: np.ndarray, measured: np.ndarray) -> float:
    return spearman(np.repeat(requested, measured.shape[1]), measured.ravel())


def bootstrap_interval(
    requested: np.ndarray, measured: np.ndarray, seed: int, draws: int = BOOTSTRAP_DRAWS
) -> tuple[float | None, float | None]:
    """95% interval of the pooled rho, resampling columns (whole traversals) of measured [V, N]."""
    rng = np.random.default_rng(seed)
    count = measured.shape[1]
    values = []
    for _ in range(draws):
        columns = rng.integers(0, count, count)
        rho = _pooled_rho(requested, measured[:, columns])
        if math.isfinite(rho):
            values.append(rho)
    if not values:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def traversal_linearity(requested: np.ndarray, measured: np.ndarray) -> float:
    """Mean over columns of R^2 of the least-squares line measured ~ requested (0 if flat)."""
    x = requested - requested.mean()
    scores = []
    for column in measured.T:
        y = column - column.mean()
        total = float(y @ y)
        if total <= 0:
            scores.append(0.0)
            continue
        slope = float(x @ y) / float(x @ x)
        scores.append(1.0 - float(np.sum((y - slope * x) ** 2)) / total)
    return float(np.mean(scores))


def _pitch_profile(tokens: np.ndarray, rep: Representation) -> dict[str, np.ndarray]:
    """Per melody: mean pitch, pitch range and duration-weighted pitch-class histogram."""
    mean, spread, classes = [], [], []
    for row in tokens:
        notes = rep.decode(row)
        pitches = np.asarray(notes.pitches, np.float64)
        durations = np.asarray(notes.ends - notes.onsets, np.float64)
        if not len(pitches):
            mean.append(np.nan)
            spread.append(np.nan)
            classes.append(np.full(12, np.nan))
            continue
        mean.append(float(np.average(pitches, weights=np.maximum(durations, 1e-9))))
        spread.append(float(pitches.max() - pitches.min()))
        histogram = np.bincount(pitches.astype(int) % 12, weights=durations, minlength=12)
        classes.append(histogram / max(histogram.sum(), 1e-9))
    return {
        "mean_pitch": np.array(mean),
        "pitch_range": np.array(spread),
        "classes": np.stack(classes),
    }


def restrictiveness(tokens: np.ndarray, rep: Representation) -> dict[str, float | None]:
    """How little the non-target attributes move along traversals of tokens [V, N, T].

    For mean pitch and pitch range: 1 - (mean std along a traversal) / (std across
    codes at the middle request); for the pitch-class histogram: 1 - (mean L1
    distance to the traversal's middle histogram) / (mean L1 distance between codes'
    middle histograms). 1: unchanged by the request; 0: moves as much as between
    different melodies. None where undefined (empty outputs).
    """
    values, count = tokens.shape[:2]
    profiles = [_pitch_profile(tokens[v], rep) for v in range(values)]
    middle = profiles[values // 2]
    out: dict[str, float | None] = {}
    for name in ("mean_pitch", "pitch_range"):
        stacked = np.stack([p[name] for p in profiles])  # [V, N]
        along = np.nanmean(np.nanstd(stacked, axis=0))
        across = np.nanstd(middle[name])
        out[name] = _finite(1.0 - along / across) if across > 0 else None
    classes = np.stack([p["classes"] for p in profiles])  # [V, N, 12]
    along = np.nanmean(np.abs(classes - classes[values // 2][None]).sum(-1))
    centre = middle["classes"]
    shuffled = np.roll(centre, 1, axis=0)
    across = np.nanmean(np.abs(centre - shuffled).sum(-1))
    out["pitch_classes"] = _finite(1.0 - along / across) if across > 0 else None
    return out


def diversity(tokens: np.ndarray) -> float:
    """The smallest share, over requests, of distinct melodies among the outputs [V, N, T]."""
    count = tokens.shape[1]
    return float(min(len(np.unique(tokens[v], axis=0)) / count for v in range(len(tokens))))


def control_measures(
    requested: Sequence[float],
    tokens: np.ndarray,
    rep: Representation,
    bounds: ValidityBounds,
    seed: int = 0,
    grid: Grid = DEFAULT_GRID,
    classifier: DanceClassifier | None = None,
) -> dict[str, Any]:
    """Every measure of the module docstring for outputs tokens [V, N, T] of V requests
    (`classifier_rho` is None without a classifier)."""
    requested = np.asarray(requested, np.float64)
    values, count = tokens.shape[:2]
    flat = tokens.reshape(values * count, -1)
    estimates = {k: v.reshape(values, count) for k, v in rhythm_estimates(flat, rep, grid).items()}
    measured = estimates["full"]
    low, high = bootstrap_interval(requested, measured, seed)
    held_out = {
        name: _finite(_pooled_rho(requested, value))
        for name, value in estimates.items()
        if name != "full"
    }
    finite_held_out = [v for v in held_out.values() if v is not None]
    classifier_rho = None
    if classifier is not None:
        dance = classifier.probability(flat).reshape(values, count)
        classifier_rho = _finite(_pooled_rho(requested, dance))
    return {
        "rho": _finite(_pooled_rho(requested, measured)),
        "rho_low": low,
        "rho_high": high,
        "linearity": traversal_linearity(requested, measured),
        "calibration_error": float(np.mean(np.abs(measured - requested[:, None]))),
        "consistency_std": float(np.mean(np.std(measured, axis=1))),
        "curve": [float(v) for v in measured.mean(axis=1)],
        "validity": float(np.mean(bounds.valid(flat, rep))),
        "diversity": diversity(tokens),
        "restrictiveness": restrictiveness(tokens, rep),
        "held_out_rho": held_out,
        "held_out_rho_min": min(finite_held_out) if finite_held_out else None,
        "classifier_rho": classifier_rho,
    }


def edit_keeps(
    requested: Sequence[float], source: np.ndarray, windows: np.ndarray, edited: np.ndarray
) -> dict[str, float | None]:
    """Share of tokens an edit keeps, overall and for requests within EDIT_CHANGE_LIMIT.

    source [N] is each window's own rhythm estimate, edited [V, N, T].
    """
    requested = np.asarray(requested, np.float64)
    kept = np.mean(edited == windows[None], axis=-1)  # [V, N]
    close = np.abs(requested[:, None] - source[None]) <= EDIT_CHANGE_LIMIT
    return {
        "keeps": float(kept.mean()),
        "keeps_small_change": float(kept[close].mean()) if close.any() else None,
    }
