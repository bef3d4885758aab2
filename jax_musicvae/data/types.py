"""Records passed between the dataset builder, the corpus and the danceability sources."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SongInfo:
    """One source song: where it is and what is known about it.

    `song_id` is stable across runs (a path relative to the source root, or a
    corpus identifier); splits and danceability caches are keyed by it.
    """

    song_id: str
    path: str
    artist: str | None = None
    title: str | None = None
    msd_id: str | None = None
    collection: str | None = None
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class SongRhythm:
    """What the `rhythm` danceability estimator needs from one parsed song.

    `onset_steps` are note-onset positions (non-drum notes, one entry per note,
    sorted) in 16th-note steps of the song's usable sections, concatenated;
    `num_steps` is the total length of those sections in steps; `grid` names
    their bar and beat layout (`meters.GRIDS`).
    """

    onset_steps: np.ndarray
    num_steps: int
    tempo_bpm: float
    drum_onset_count: int = 0
    grid: str = "duple"
