"""Statistics that tell a plausible melody from noise, and how smooth an interpolation is.

A melody (one window of tokens) is *valid* when it has at least two notes and its
pitch range, mean absolute interval and share of in-key notes each lie within the
central 99% (0.5th to 99.5th percentile) of real windows of the same dataset. The
bounds come from the training split (`ValidityBounds.fit`); the validation split's
own validity, measured the same way, is the reference a model is compared with.
Numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jax_musicvae.data.representations import Representation

STATISTICS = ("pitch_range", "mean_interval", "in_key")
MIN_NOTES = 2
PERCENTILES = (0.5, 99.5)
# The seven pitch classes of C major; the twelve transpositions cover every major
# and natural-minor key (a minor key shares its relative major's pitch classes).
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_KEYS = np.zeros((12, 12), bool)
for _tonic in range(12):
    _KEYS[_tonic, (_MAJOR + _tonic) % 12] = True


def melody_statistics(tokens: np.ndarray, rep: Representation) -> dict[str, np.ndarray]:
    """Per window [N, T]: notes, pitch_range (semitones), mean_interval (mean |step|
    between consecutive notes, semitones) and in_key (largest share of notes, weighted
    by duration, inside one major/natural-minor scale). NaN where undefined."""
    tokens = np.atleast_2d(np.asarray(tokens))
    count = len(tokens)
    stats = {name: np.full(count, np.nan) for name in STATISTICS}
    stats["notes"] = np.zeros(count, np.int64)
    for i, row in enumerate(tokens):
        notes = rep.decode(row)
        pitches = np.asarray(notes.pitches, np.int64)
        stats["notes"][i] = len(pitches)
        if not len(pitches):
            continue
        stats["pitch_range"][i] = pitches.max() - pitches.min()
        if len(pitches) > 1:
            stats["mean_interval"][i] = np.mean(np.abs(np.diff(pitches)))
        durations = np.asarray(notes.ends - notes.onsets, np.float64)
        weight = np.bincount(pitches % 12, weights=durations, minlength=12)
        stats["in_key"][i] = float((_KEYS @ weight).max() / max(weight.sum(), 1e-9))
    return stats


@dataclasses.dataclass(frozen=True)
class ValidityBounds:
    """Per statistic, the [low, high] range of real windows (percentiles of a split)."""

    bounds: dict[str, tuple[float, float]]

    @classmethod
    def fit(cls, tokens: np.ndarray, rep: Representation) -> ValidityBounds:
        stats = melody_statistics(tokens, rep)
        bounds = {}
        for name in STATISTICS:
            values = stats[name][np.isfinite(stats[name])]
            if not len(values):
                raise ValueError(f"no real window defines {name}: cannot fit validity bounds")
            low, high = np.percentile(values, PERCENTILES)
            bounds[name] = (float(low), float(high))
        return cls(bounds)

    def valid(self, tokens: np.ndarray, rep: Representation) -> np.ndarray:
        """Boolean [N]: enough notes and every statistic within its bounds."""
        stats = melody_statistics(tokens, rep)
        ok = stats["notes"] >= MIN_NOTES
        for name, (low, high) in self.bounds.items():
            values = stats[name]
            ok &= np.isfinite(values) & (values >= low) & (values <= high)
        return ok

    def to_dict(self) -> dict[str, Any]:
        return {name: list(bound) for name, bound in self.bounds.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ValidityBounds:
        return cls({name: (float(low), float(high)) for name, (low, high) in values.items()})


def interpolation_smoothness(paths: np.ndarray) -> float:
    """Mean token agreement of adjacent steps of interpolations [P, steps, T] (1: no jumps)."""
    paths = np.asarray(paths)
    if paths.ndim != 3 or paths.shape[1] < 2:
        raise ValueError(f"interpolations must be [P, steps >= 2, T], got shape {paths.shape}")
    return float(np.mean(paths[:, 1:] == paths[:, :-1]))
