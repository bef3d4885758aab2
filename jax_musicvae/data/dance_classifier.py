"""A dance-vs-air classifier of melody windows: an estimator no model trains on.

Control is scored with the `rhythm` estimate, which `cpu_small` also trains its
attribute dimension on. This classifier is a second, independent judge: it learns
from real windows what separates the corpus's dance tunes (labels scored >= 0.7
by `LABEL_DANCEABILITY`: reels, jigs, hornpipes...) from its airs, songs,
laments, lullabies and chorales (<= 0.35), and knows nothing of the hand-set
weights of the rhythm estimate. Features, rhythm only (a model must not pass by
changing its pitches): the onset rate at each position of the bar, the share of
sounding steps and the log mean note length. Model: L2-regularised logistic
regression on standardised features, the two classes weighted equally, fitted
by Newton's method.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from jax_musicvae.data.danceability import LABEL_DANCEABILITY
from jax_musicvae.data.meters import DEFAULT_GRID, Grid
from jax_musicvae.data.representations import Representation, get_representation
from jax_musicvae.data.source import WindowSource, dataset_grid, load_manifest, load_songs
from jax_musicvae.statistics import roc_auc

logger = logging.getLogger(__name__)

DANCE_AT_LEAST = 0.7
AIR_AT_MOST = 0.35
MAX_TRAINING_WINDOWS = 20_000
NEWTON_STEPS = 25


def window_features(
    tokens: np.ndarray, rep: Representation, grid: Grid = DEFAULT_GRID
) -> np.ndarray:
    """Features [N, steps_per_bar + 2] of windows [N, T] (see the module docstring)."""
    tokens = np.asarray(tokens)
    steps = grid.steps_per_bar
    bars = tokens.shape[1] // steps
    features = np.zeros((len(tokens), steps + 2), np.float64)
    for i, window in enumerate(tokens):
        notes = rep.decode(window)
        np.add.at(features[i], notes.onsets % steps, 1.0 / bars)
        if len(notes.onsets):
            features[i, steps + 1] = np.log(np.mean(notes.ends - notes.onsets))
    features[:, steps] = rep.sounding(tokens).mean(axis=-1)
    return features


@dataclasses.dataclass(frozen=True)
class DanceClassifier:
    """P(dance | window) = sigmoid(((features - mean) / scale) @ weights + bias)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    grid: Grid
    representation: str

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        is_dance: np.ndarray,
        grid: Grid,
        representation: str,
        l2: float = 1.0,
    ) -> DanceClassifier:
        """Logistic regression of `is_dance` [N] on `features` [N, F] (Newton's method),
        the two classes weighted equally (the corpus has far more dances than airs)."""
        labels = np.asarray(is_dance, np.float64)
        if labels.min() == labels.max():
            raise ValueError("the dance classifier needs both dance and air windows")
        mean, scale = features.mean(axis=0), features.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        x = np.hstack([(features - mean) / scale, np.ones((len(features), 1))])
        theta = np.zeros(x.shape[1])
        penalty = np.full(x.shape[1], l2)
        penalty[-1] = 0.0  # the bias is not shrunk
        weight = np.where(labels > 0, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
        for _ in range(NEWTON_STEPS):
            p = 1.0 / (1.0 + np.exp(-x @ theta))
            gradient = x.T @ (weight * (p - labels)) + penalty * theta
            hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + np.diag(penalty)
            theta -= np.linalg.solve(hessian, gradient)
        return cls(mean, scale, theta[:-1], float(theta[-1]), grid, representation)

    def probability(self, tokens: np.ndarray) -> np.ndarray:
        """P(dance) [N] of windows [N, T]."""
        rep = get_representation(self.representation)
        x = (window_features(tokens, rep, self.grid) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))


def labelled_windows(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Windows [N, T] of `split` whose song is a dance or an air by its label, and is_dance [N]."""
    source = WindowSource(data_dir, split)
    songs = load_songs(data_dir)
    value = np.array([LABEL_DANCEABILITY.get(s.get("label") or "", np.nan) for s in songs])
    per_window = value[np.asarray(source.song)] if len(source) else np.zeros(0)
    keep = (per_window >= DANCE_AT_LEAST) | (per_window <= AIR_AT_MOST)
    return np.asarray(source.tokens[np.flatnonzero(keep)]), per_window[keep] >= DANCE_AT_LEAST


@dataclasses.dataclass(frozen=True)
class FittedClassifier:
    """A classifier with the number of windows it was fitted and checked on."""

    classifier: DanceClassifier
    training_windows: int
    validation_windows: int
    validation_auc: float


def fit_dance_classifier(data_dir: str | Path, seed: int = 0) -> FittedClassifier | None:
    """The classifier fitted on the training split's labelled windows (at most
    MAX_TRAINING_WINDOWS, a seeded sample) and its ROC AUC on the validation split's;
    None when the dataset's songs carry no dance or no air labels."""
    manifest = load_manifest(data_dir)
    rep, grid = get_representation(manifest["representation"]), dataset_grid(manifest)
    tokens, is_dance = labelled_windows(data_dir, "train")
    if len(tokens) == 0 or is_dance.all() or not is_dance.any():
        logger.info("%s: no dance and air labels; no dance-vs-air classifier", data_dir)
        return None
    if len(tokens) > MAX_TRAINING_WINDOWS:
        index = np.random.default_rng(seed).choice(len(tokens), MAX_TRAINING_WINDOWS, replace=False)
        tokens, is_dance = tokens[index], is_dance[index]
    classifier = DanceClassifier.fit(window_features(tokens, rep, grid), is_dance, grid, rep.name)
    held_tokens, held_is_dance = labelled_windows(data_dir, "validation")
    auc = np.nan
    if len(held_tokens):
        p = classifier.probability(held_tokens)
        auc = roc_auc(p[held_is_dance], p[~held_is_dance])
    logger.info(
        "dance-vs-air classifier: %d training windows, validation AUC %.3f on %d windows",
        len(tokens),
        auc,
        len(held_tokens),
    )
    return FittedClassifier(classifier, len(tokens), len(held_tokens), float(auc))
