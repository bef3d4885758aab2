"""The rhythm estimator orders constructed rhythms the way the danceability idea says."""

from __future__ import annotations

import numpy as np
import pytest

from jax_musicvae.data.rhythm import WEIGHTS, estimate_danceability, rhythm_features
from jax_musicvae.data.types import SongRhythm

BARS = 8
N = 16 * BARS


def rhythm(onsets, bpm: float = 120.0, drums: int = 0, num_steps: int = N) -> SongRhythm:
    return SongRhythm(np.asarray(onsets, dtype=np.int32), num_steps, bpm, drums)


FOUR_ON_FLOOR = rhythm(np.arange(0, N, 4), drums=4 * 4 * BARS)
REEL = rhythm(np.arange(0, N, 2))  # a steady stream of eighths
AIR = rhythm([0, 12, 16, 22, 40, 48, 58, 64, 76, 96, 104, 120], bpm=66.0)  # sparse, irregular
EMPTY = rhythm([])


def test_weights_sum_to_one():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_ordering_dance_over_air_over_empty():
    four, reel, air = (estimate_danceability(r) for r in (FOUR_ON_FLOOR, REEL, AIR))
    assert four > air + 0.3 and reel > air + 0.3
    assert air > estimate_danceability(EMPTY) == 0.0


def test_values_on_constructed_rhythms():
    assert estimate_danceability(REEL) == pytest.approx(0.81, abs=0.01)
    assert estimate_danceability(AIR) == pytest.approx(0.35, abs=0.01)
    f = rhythm_features(REEL)
    assert f["raw_onsets_per_beat"] == 2.0
    assert f["beat_coverage"] == 1.0 and f["regularity"] == 1.0
    assert f["raw_syncopation"] == 0.0  # every onset falls on the stronger grid first


def test_syncopation_lhl():
    # Onsets on the "and" of beats held over the next beat: each is syncopated by beat - eighth
    # = (-2) - (-3) = 1 (LHL), except the one held over the half-bar (-1 - -3 = 2).
    f = rhythm_features(rhythm([2, 6, 10, 14], num_steps=16))
    assert f["raw_syncopation"] == pytest.approx((1 + 2 + 1 + 0) / 4)
    assert rhythm_features(rhythm([0, 4, 8, 12], num_steps=16))["raw_syncopation"] == 0.0


def test_more_drums_and_preferred_tempo_raise_the_value():
    base = rhythm(np.arange(0, N, 4))
    assert estimate_danceability(FOUR_ON_FLOOR) > estimate_danceability(base)
    slow = rhythm(np.arange(0, N, 4), bpm=60.0)
    assert estimate_danceability(base) > estimate_danceability(slow)


@pytest.mark.parametrize("seed", range(20))
def test_bounds_on_random_rhythms(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    onsets = np.sort(rng.integers(0, n, size=int(rng.integers(0, 3 * n))))
    r = rhythm(onsets, bpm=float(rng.uniform(1, 400)), drums=int(rng.integers(0, 100)), num_steps=n)
    value = estimate_danceability(r)
    assert 0.0 <= value <= 1.0
    assert all(0.0 <= v <= 1.0 for k, v in rhythm_features(r).items() if not k.startswith("raw_"))
