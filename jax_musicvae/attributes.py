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
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> AttributeVector:
        return cls.from_json(json.loads(Path(path).read_text()))


def window_danceability(
    tokens: np.ndarray, condition: np.ndarray, representation: Representation
) -> np.ndarray:
    """Dataset danceability per window; the rhythm estimate where the dataset has none (NaN)."""
    values = np.asarray(condition, np.float32).copy()
    missing = np.flatnonzero(np.isnan(values))
    for i in missing:
        values[i] = melody_danceability(tokens[i], representation)
    if len(missing):
        logger.info(
            "%d of %d windows without danceability: used the rhythm estimate",
            len(missing),
            len(values),
        )
    return values


def compute_attribute_vector(
    model: TrainedModel,
    data: str | Path,
    *,
    split: str = "train",
    fraction: float = 0.25,
    max_windows: int | None = None,
    seed: int = 0,
) -> AttributeVector:
    """Encode the windows of a dataset split and contrast the top and bottom `fraction`.

    Windows are ranked by their song's danceability; `max_windows` takes a seeded
    random subset first (encoding a large training split is the slow part).
    """
    if model.config.conditioning != "none":
        raise ValueError(
            f"conditioning={model.config.conditioning!r} takes danceability directly; "
            "attribute vectors are for models trained with conditioning 'none'"
        )
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"fraction={fraction} must be in (0, 0.5]")
    source = WindowSource(data, split)
    if len(source) == 0:
        raise ValueError(f"{data}: split {split!r} has no windows")
    index = np.arange(len(source))
    if max_windows is not None and len(index) > max_windows:
        index = np.sort(np.random.default_rng(seed).choice(index, max_windows, replace=False))
    tokens = np.asarray(source.tokens[index], np.int32)
    danceability = window_danceability(tokens, source.condition[index], model.representation)
    count = max(1, math.floor(fraction * len(index)))
    order = np.argsort(danceability, kind="stable")
    low, high = order[:count], order[-count:]
    if danceability[high].mean() <= danceability[low].mean():
        raise ValueError(
            f"{data}/{split}: all windows have the same danceability; no attribute to contrast"
        )
    mu = model.encode(tokens, seed=seed).mu
    vector = mu[high].mean(0) - mu[low].mean(0)
    result = AttributeVector(
        vector=vector.astype(np.float32),
        high_danceability=float(danceability[high].mean()),
        low_danceability=float(danceability[low].mean()),
        high_count=int(count),
        low_count=int(count),
        fraction=float(fraction),
        dataset=str(data),
        split=split,
    )
    logger.info(
        "attribute vector from %d windows: |v| = %.3f, danceability %.3f (high) vs %.3f (low)",
        len(index),
        float(np.linalg.norm(vector)),
        result.high_danceability,
        result.low_danceability,
    )
    return result
