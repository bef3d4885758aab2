"""Melody statistics, validity bounds and interpolation smoothness (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from jax_musicvae.data.melody_stats import (
    ValidityBounds,
    interpolation_smoothness,
    melody_statistics,
)
from jax_musicvae.data.representations import Notes, get_representation

REP = get_representation("melody90")


def melody(pitches: list[int], length: int = 2) -> np.ndarray:
    """Consecutive notes of `length` steps each, as melody90 tokens of 32 steps."""
    onsets = np.arange(len(pitches)) * length
    notes = Notes(onsets, onsets + length, np.asarray(pitches))
    return REP.encode(notes, 32)


def test_statistics_of_a_scale() -> None:
    c_major = melody([60, 62, 64, 65, 67, 69, 71, 72])
    stats = melody_statistics(c_major, REP)
    assert stats["notes"][0] == 8
    assert stats["pitch_range"][0] == 12
    assert stats["mean_interval"][0] == pytest.approx(12 / 7)
    assert stats["in_key"][0] == 1.0
    chromatic = melody(list(range(60, 72)))
    assert melody_statistics(chromatic, REP)["in_key"][0] == pytest.approx(7 / 12)
    empty = melody_statistics(np.zeros((1, 32), np.int64), REP)
    assert empty["notes"][0] == 0 and np.isnan(empty["pitch_range"][0])


def test_validity_bounds_accept_tunes_and_reject_noise() -> None:
    rng = np.random.default_rng(0)
    scale = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    tunes = np.stack([melody(list(rng.choice(scale, 12))) for _ in range(200)])
    bounds = ValidityBounds.fit(tunes, REP)
    assert bounds.valid(tunes, REP).mean() >= 0.97
    noise = rng.integers(0, REP.depth, (50, 32))
    assert bounds.valid(noise, REP).mean() == 0.0
    one_note = melody([64], length=32)[None]
    assert not bounds.valid(one_note, REP)[0]
    with pytest.raises(ValueError, match="pitch_range"):
        ValidityBounds.fit(np.zeros((3, 32), np.int64), REP)


def test_interpolation_smoothness() -> None:
    a, b = np.zeros(8, np.int64), np.ones(8, np.int64)
    jump = np.stack([a, a, b, b])[None]  # one step of four changes everything
    assert interpolation_smoothness(jump) == pytest.approx(2 / 3)
    assert interpolation_smoothness(np.stack([a, a, a])[None]) == 1.0
    with pytest.raises(ValueError, match="steps >= 2"):
        interpolation_smoothness(a[None, None])
