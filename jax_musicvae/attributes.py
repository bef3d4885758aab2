"""Danceability of token sequences, and the attribute vector of an unconditioned model.

Why: a model trained without conditioning (`none`) has no danceability input, so
the only way to steer it is the MusicVAE paper's attribute vector: the mean mu
of high-danceability windows minus the mean mu of low-danceability ones, added
to a melody's code. `musicvae attribute-vector` computes it from a dataset and
stores it as JSON inside the checkpoint's step folder (so it is deleted together
with the parameters it was computed from).

The rhythm estimate of a melody (`melody_danceability`) is also how the analysis
measures whether a request for danceability c was honoured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_musicvae.atomic import atomic_write
from jax_musicvae.data.meters import DEFAULT_GRID, Grid
from jax_musicvae.data.representations import Representation
from jax_musicvae.data.rhythm import melody_danceability
from jax_musicvae.data.source import WindowSource

if TYPE_CHECKING:
    from jax_musicvae.generate import TrainedModel

logger = logging.getLogger(__name__)

ATTRIBUTE_FILE = "attribute_vector.json"
COMMAND = "musicvae attribute-vector --checkpoint CKPT --data DATASET"


@dataclasses.dataclass(frozen=True)
class AttributeVector:
    """Mean mu of the most danceable windows minus that of the least danceable ones.

    `high_danceability - low_danceability` is the danceability difference the
    vector stands for, so moving a melody from danceability s to t adds
    `(t - s) / delta * vector` (`shift`).
    """

    vector: np.ndarray
    high_danceability: float
    low_danceability: float
    high_count: int
    low_count: int
    fraction: float
    dataset: str
    split: str
    method: str = "contrast"
    level: str = "song"
    step_scale: float = 1.0

    @property
    def delta(self) -> float:
        return self.high_danceability - self.low_danceability

    @property
    def midpoint(self) -> float:
        """Danceability assigned to a code from the prior (between the two groups)."""
        return 0.5 * (self.high_danceability + self.low_danceability)

    def shift(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """[N, dims] latent offsets that move danceability from `source` to `target` ([N])."""
        amount = (np.asarray(target, np.float32) - np.asarray(source, np.float32)) / self.delta
        return amount[:, None] * self.vector[None, :]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "vector": [float(x) for x in self.vector]}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> AttributeVector:
        return cls(**{**values, "vector": np.asarray(values["vector"], np.float32)})

    def save(self, path: Path) -> Path:
        path = Path(path)
        atomic_write(path, json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> AttributeVector:
        return cls.from_json(json.loads(Path(path).read_text()))


def window_danceability(
    tokens: np.ndarray,
    condition: np.ndarray,
    representation: Representation,
    grid: Grid = DEFAULT_GRID,
) -> np.ndarray:
    """Dataset danceability per window; the rhythm estimate where the dataset has none (NaN)."""
    values = np.asarray(condition, np.float32).copy()
    missing = np.flatnonzero(np.isnan(values))
    for i in missing:
        values[i] = melody_danceability(tokens[i], representation, grid=grid)
    if len(missing):
        logger.info(
            "%d of %d windows without danceability: used the rhythm estimate",
            len(missing),
            len(values),
        )
    return values


METHODS = ("contrast", "regression")
STEP_SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)
CALIBRATION_WINDOWS = 64
CALIBRATION_CHANGE = 0.1


def regression_direction(mu: np.ndarray, danceability: np.ndarray) -> np.ndarray:
    """w / |w|^2 for the ridge fit danceability ~ a + mu . w: adding k times it moves the
    fitted danceability by exactly k."""
    centred = mu - mu.mean(0)
    target = danceability - danceability.mean()
    ridge = 1e-3 * len(mu) * np.eye(mu.shape[1])
    w = np.linalg.solve(centred.T @ centred + ridge, centred.T @ target)
    return w / float(w @ w)


def calibrate_step(model: TrainedModel, tokens: np.ndarray, vector: AttributeVector) -> float:
    """The scale of `vector` whose greedy edits of `tokens` by +-CALIBRATION_CHANGE change
    the decoded melodies' rhythm estimate by that much on average (from STEP_SCALES)."""
    tokens = tokens[:CALIBRATION_WINDOWS]
    before = np.array([model.danceability_of(t) for t in tokens])
    mu = model.encode(tokens).mu
    errors = []
    for scale in STEP_SCALES:
        error = 0.0
        for change in (-CALIBRATION_CHANGE, CALIBRATION_CHANGE):
            shift = scale * vector.shift(np.zeros(len(mu)), np.full(len(mu), change))
            decoded = model.decode(mu + shift, temperature=0.0)
            after = np.array([model.danceability_of(t) for t in decoded])
            error += abs(float(np.mean(after - before)) - change)
        errors.append(error)
    return STEP_SCALES[int(np.argmin(errors))]


def compute_attribute_vector(
    model: TrainedModel,
    data: str | Path,
    *,
    split: str = "train",
    fraction: float = 0.25,
    max_windows: int | None = None,
    seed: int = 0,
    method: str = "contrast",
    level: str = "song",
) -> AttributeVector:
    """A latent direction for danceability from the encoded windows of a dataset split.

    `contrast` (the MusicVAE paper's): mean mu of the top `fraction` minus that of the
    bottom `fraction`. `regression`: the ridge-regression direction of danceability on
    mu, its step calibrated by decoding (`calibrate_step`). Windows are ranked by their
    song's danceability (`level="song"`) or their own rhythm estimate (`"window"`);
    `max_windows` takes a seeded random subset first (encoding is the slow part).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {', '.join(METHODS)}")
    if model.config.conditioning != "none":
        raise ValueError(
            f"conditioning={model.config.conditioning!r} takes danceability directly; "
            "attribute vectors are for models trained with conditioning 'none'"
        )
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"fraction={fraction} must be in (0, 0.5]")
    source = WindowSource(data, split, level)
    if len(source) == 0:
        raise ValueError(f"{data}: split {split!r} has no windows")
    index = np.arange(len(source))
    if max_windows is not None and len(index) > max_windows:
        index = np.sort(np.random.default_rng(seed).choice(index, max_windows, replace=False))
    tokens = np.asarray(source.tokens[index], np.int32)
    danceability = window_danceability(
        tokens, source.condition[index], model.representation, model.grid
    )
    count = max(1, math.floor(fraction * len(index)))
    order = np.argsort(danceability, kind="stable")
    low, high = order[:count], order[-count:]
    if danceability[high].mean() <= danceability[low].mean():
        raise ValueError(
            f"{data}/{split}: all windows have the same danceability; no attribute to contrast"
        )
    mu = model.encode(tokens, seed=seed).mu
    high_value, low_value = float(danceability[high].mean()), float(danceability[low].mean())
    if method == "contrast":
        vector = mu[high].mean(0) - mu[low].mean(0)
    else:  # scaled so that shift() moves the fitted danceability by target - source
        vector = regression_direction(mu, danceability) * (high_value - low_value)
    result = AttributeVector(
        vector=vector.astype(np.float32),
        high_danceability=high_value,
        low_danceability=low_value,
        high_count=int(count),
        low_count=int(count),
        fraction=float(fraction),
        dataset=str(data),
        split=split,
        method=method,
        level=level,
    )
    if method == "regression":
        scale = calibrate_step(model, tokens, result)
        result = dataclasses.replace(result, vector=result.vector * scale, step_scale=scale)
    logger.info(
        "attribute vector from %d windows: |v| = %.3f, danceability %.3f (high) vs %.3f (low)",
        len(index),
        float(np.linalg.norm(vector)),
        result.high_danceability,
        result.low_danceability,
    )
    return result
