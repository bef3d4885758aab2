"""Loader: memory-mapped records, batches, seeded order, sharding, exact resume."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import make_songs

from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.data.loader import make_loader
from jax_musicvae.data.source import WindowSource


class Constant:
    def values(self, songs, rhythms):
        return {s.song_id: int(s.song_id[4:6]) / 100 for s in songs}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    make_songs(tmp / "midi", 10, bars=9)  # 8 distinct two-bar windows per song
    build_dataset(
        str(tmp / "midi"),
        tmp / "ds",
        BuildSettings(num_bars=2, split=(1.0, 0.0, 0.0)),
        cache_dir=tmp / "c",
        progress=False,
        danceability_source=Constant(),
    )
    return tmp / "ds"


def rows(batches) -> list[bytes]:
    return [row.tobytes() for b in batches for row in b["tokens"]]


def take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(n)]


def test_source_records_and_pickling(dataset):
    source = WindowSource(dataset, "train")
    assert len(source) == 80
    record = source[3]
    assert record["tokens"].dtype == np.int32 and record["tokens"].shape == (32,)
    song = int(source.song[3])
    assert record["condition"] == np.float32(source.condition[3])
    assert record["condition"] == np.float32(song / 100)  # songs are indexed in file order
    clone = pickle.loads(pickle.dumps(source))
    assert clone._arrays is None
    np.testing.assert_array_equal(clone[3]["tokens"], record["tokens"])
    assert len(WindowSource(dataset, "test")) == 0
    with pytest.raises(ValueError, match="split"):
        WindowSource(dataset, "dev")


def test_batches_shapes_and_seeded_order(dataset):
    batches = take(iter(make_loader(dataset, batch_size=8, seed=1)), 10)
    assert batches[0]["tokens"].shape == (8, 32) and batches[0]["tokens"].dtype == np.int32
    assert batches[0]["condition"].shape == (8,) and batches[0]["condition"].dtype == np.float32
    # One epoch = 10 batches of 8 = every window once.
    assert sorted(rows(batches)) == sorted(
        r.tobytes() for r in WindowSource(dataset).tokens.astype(np.int32)
    )
    again = take(iter(make_loader(dataset, batch_size=8, seed=1)), 10)
    assert rows(again) == rows(batches)
    other = take(iter(make_loader(dataset, batch_size=8, seed=2)), 10)
    assert rows(other) != rows(batches)
    # The next epoch is reshuffled.
    epochs = take(iter(make_loader(dataset, batch_size=8, seed=1)), 20)
    assert rows(epochs[10:]) != rows(epochs[:10])


def test_sharding_by_process(dataset):
    shards = [
        rows(
            take(
                iter(make_loader(dataset, batch_size=4, seed=0, process_index=i, process_count=2)),
                10,
            )
        )
        for i in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 40
    assert not set(shards[0]) & set(shards[1])
    with pytest.raises(ValueError, match="process_index"):
        make_loader(dataset, batch_size=4, process_index=2, process_count=2)


def test_state_save_and_restore_exact(dataset):
    loader = make_loader(dataset, batch_size=8, seed=3)
    it = iter(loader)
    take(it, 13)  # into the second epoch
    state = it.get_state()
    expected = take(it, 7)
    resumed = iter(make_loader(dataset, batch_size=8, seed=3))
    resumed.set_state(state)
    got = take(resumed, 7)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        np.testing.assert_array_equal(a["condition"], b["condition"])


def test_batch_larger_than_data_is_an_error(dataset):
    with pytest.raises(ValueError, match="cannot fill a batch"):
        make_loader(dataset, batch_size=64, process_count=2)
