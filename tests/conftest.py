"""Fixtures shared by the test modules; helpers live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from helpers import BARS, build_tiny_dataset, make_songs

from jax_musicvae.data.dataset import BuildSettings, build_dataset

# One CPU device for the whole test process. `musicvae` commands that decode ask JAX for
# one per core (cpu_devices) when they start it; run in-process by a test before anything
# else started JAX, that would hold for every later test.
jax.config.update("jax_num_cpu_devices", 1)


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory) -> Path:
    """12 songs of 2-bar melody90 windows (64 train, 32 validation), danceability per song."""
    return build_tiny_dataset(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def generation_dataset(tmp_path_factory) -> Path:
    """Eight songs of two-bar windows whose danceability rises with the song index."""

    class ByIndex:
        def values(self, songs, rhythms):
            return {s.song_id: int(s.song_id[4:6]) / 8 + 0.05 for s in songs}

    tmp = tmp_path_factory.mktemp("gen-data")
    make_songs(tmp / "midi", 8, bars=4)
    build_dataset(
        str(tmp / "midi"),
        tmp / "ds",
        BuildSettings(representation="melody90", num_bars=BARS, split=(0.5, 0.0, 0.5)),
        cache_dir=tmp / "cache",
        progress=False,
        danceability_source=ByIndex(),
    )
    return tmp / "ds"
