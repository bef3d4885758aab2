"""The danceability map: which value of the attribute dimension decodes to a requested
danceability.

Why: a model trained with the attribute loss orders its attribute dimension like the
Gaussianised danceability t = Phi^-1(F(c)), but the sign loss fixes no scale (the
encoder puts windows at about half of t) and greedy decoding does not reproduce the
training rhythms exactly, so setting the dimension to t gives melodies that are on
average less danceable than asked and that saturate at the top of the range
(docs/danceability-control.md). The map records, for a grid of values of the
dimension, the mean rhythm estimate of what the model decodes there (edits of training
windows, and prior samples decoded as `TrainedModel.sample` decodes them), makes it
non-decreasing and inverts it. `musicvae danceability-map` fits it and stores it as
JSON in the checkpoint's step folder, where `TrainedModel.load` finds it.

`emphasis` s > 1 asks for centre + s (c - centre) instead of c: requests further from
the training median move the rhythm further, so different requests give results that
are further apart relative to the spread at one request, at the cost of results that
overshoot the request by (s - 1) |c - centre| on average.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from jax_musicvae.atomic import atomic_write
from jax_musicvae.data.source import WindowSource
from jax_musicvae.statistics import increasing_fit

if TYPE_CHECKING:
    from jax_musicvae.generate import TrainedModel

logger = logging.getLogger(__name__)

MAP_FILE = "danceability_map.json"
CODE_GRID = tuple(float(v) for v in np.linspace(-4.0, 4.0, 17))
PRIOR_SEED = 7919  # the fit's prior codes; the analysis draws its own from seed 0
Use = Literal["edit", "sample"]


@dataclasses.dataclass(frozen=True)
class DanceabilityMap:
    """Mean decoded danceability at each value of `codes` (non-decreasing), for edits
    (decoded once, as `edit`) and prior samples (one decode-encode round, as `sample`)."""

    codes: tuple[float, ...]
    edit: tuple[float, ...]
    sample: tuple[float, ...]
    centre: float  # the training windows' median danceability: `emphasis` pivots here
    windows: int
    dataset: str
    split: str

    def code(self, danceability: np.ndarray, use: Use, emphasis: float = 1.0) -> np.ndarray:
        """The attribute-dimension values [N] that decode to `danceability` [N] on average.

        Requests beyond what the model decodes anywhere get the code where the curve
        first reaches its top (or last leaves its bottom), not the grid's end; a flat
        stretch inside the curve answers with its first code.
        """
        if emphasis <= 0:
            raise ValueError(f"emphasis={emphasis} must be > 0")
        target = self.centre + emphasis * (np.asarray(danceability, np.float64) - self.centre)
        curve, codes = np.asarray(getattr(self, use)), np.asarray(self.codes)
        values, first = np.unique(curve, return_index=True)
        at = codes[first]
        at[0] = codes[np.flatnonzero(curve == values[0])[-1]]
        return np.interp(target, values, at).astype(np.float32)

    def save(self, path: Path) -> Path:
        atomic_write(Path(path), json.dumps(dataclasses.asdict(self), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> DanceabilityMap:
        values: dict[str, Any] = json.loads(Path(path).read_text())
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except TypeError as error:
            raise ValueError(f"{path}: not a danceability map ({error})") from error


def fit_danceability_map(
    model: TrainedModel,
    data: str | Path,
    *,
    split: str = "train",
    windows: int = 256,
    seed: int = 0,
) -> DanceabilityMap:
    """Decode `windows` seeded training windows and as many prior codes at every value of
    CODE_GRID (greedy, as the analysis decodes) and record the mean rhythm estimate."""
    dimension = model.attribute_dimension
    if dimension is None:
        raise ValueError(
            f"{model.label}: a danceability map needs a model trained with the attribute "
            "loss (loss.attribute_loss 'sign' or 'regression')"
        )
    if windows < 1:
        raise ValueError(f"windows={windows} must be >= 1")
    source = WindowSource(data, split, model.experiment.data.danceability)
    if len(source) == 0:
        raise ValueError(f"{data}: split {split!r} has no windows")
    index = np.sort(np.random.default_rng(seed).permutation(len(source))[:windows])
    tokens = np.asarray(source.tokens[index], np.int32)
    mu = model.encode(tokens, seed=seed).mu
    prior = model.prior(len(tokens), seed=PRIOR_SEED)[0]
    curves: dict[str, list[float]] = {"edit": [], "sample": []}
    for value in CODE_GRID:
        for use, codes, rounds in (("edit", mu, 0), ("sample", prior, 1)):
            z = codes.copy()
            z[:, dimension] = value
            decoded = model.decode(z, temperature=0.0, seed=seed, refine=rounds)
            curves[use].append(float(np.mean([model.danceability_of(t) for t in decoded])))
    centre = float(np.median(source.window_danceability))
    result = DanceabilityMap(
        codes=CODE_GRID,
        edit=tuple(float(v) for v in increasing_fit(curves["edit"])),
        sample=tuple(float(v) for v in increasing_fit(curves["sample"])),
        centre=centre,
        windows=len(tokens),
        dataset=str(data),
        split=split,
    )
    logger.info(
        "danceability map from %d windows: edits decode %.3f ... %.3f, samples %.3f ... %.3f "
        "over codes %.1f ... %.1f (training median %.3f)",
        len(tokens),
        result.edit[0],
        result.edit[-1],
        result.sample[0],
        result.sample[-1],
        CODE_GRID[0],
        CODE_GRID[-1],
        centre,
    )
    return result
