"""Rank statistics shared by the dataset builder and the analysis (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks; NaN when either side is constant."""
    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else math.nan


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(positive) or not len(negative):
        return math.nan
    r = ranks(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((r[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def attribute_quantiles(values: np.ndarray, knots: int = 101) -> tuple[float, ...]:
    """The empirical distribution of an attribute, frozen as `knots` evenly spaced quantiles."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        raise ValueError("an attribute needs at least two distinct finite values to normalise")
    return tuple(float(q) for q in np.quantile(values, np.linspace(0.0, 1.0, knots)))


def _cdf_knots(quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of the CDF; runs of equal quantiles become one mid-run knot."""
    q = np.asarray(quantiles, np.float64)
    probabilities = np.linspace(0.0, 1.0, len(q))
    values, inverse = np.unique(q, return_inverse=True)
    return values, np.bincount(inverse, probabilities) / np.bincount(inverse)


def gaussianise(values: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Phi^-1(F(c)): the attribute mapped to a standard normal through its frozen CDF F.

    F is clipped to [0.5 / K, 1 - 0.5 / K] (K knots), so values outside the training
    range map to the ends of the range instead of to infinity.
    """
    from scipy.special import ndtri

    xp, fp = _cdf_knots(quantiles)
    edge = 0.5 / len(quantiles)
    p = np.clip(np.interp(np.asarray(values, np.float64), xp, fp), edge, 1.0 - edge)
    return ndtri(p).astype(np.float32)


def degaussianise(scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """The inverse of `gaussianise`: the attribute value whose normal score is `scores`."""
    from scipy.special import ndtr

    xp, fp = _cdf_knots(quantiles)
    return np.interp(ndtr(np.asarray(scores, np.float64)), fp, xp).astype(np.float32)


def increasing_fit(values: Sequence[float]) -> np.ndarray:
    """The least-squares non-decreasing sequence closest to `values` (isotonic
    regression by pooling adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count] per pooled block
    for value in np.asarray(values, np.float64):
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks])
