"""Random-access reading of a built dataset and a grain loader of training batches.

The arrays are memory-mapped, so opening a dataset costs nothing and a record
is a slice of the page cache. Batches come from grain's `DataLoader` with an
`IndexSampler`: it shards the records by process (`process_index`,
`process_count`, passed in as ints so this module never imports jax), shuffles
per epoch from `seed`, and its iterator's position is exact and portable:

    it = iter(loader)
    ...
    state = it.get_state()        # bytes (JSON), store next to a checkpoint
    it = iter(loader); it.set_state(state)   # resumes with the very next batch

Batches are `{"tokens": int32 [B, T], "condition": float32 [B]}`; condition is
the song's danceability (NaN for a dataset built without one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain.python as grain
import numpy as np

from jax_musicvae.data.dataset import SPLITS


def load_manifest(root: str | Path) -> dict[str, Any]:
    """The dataset's manifest.json, with a clear error when `root` is not a dataset."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{root}: not a dataset (no manifest.json); run `musicvae data build`"
        )
    return json.loads(path.read_text())


def load_songs(root: str | Path) -> list[dict[str, Any]]:
    """Per-song records (songs.jsonl), indexed by the song index of each window."""
    lines = (Path(root) / "songs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


class WindowSource:
    """One split as a grain RandomAccessDataSource (len + getitem), memory-mapped.

    Pickles as (root, split) and reopens lazily, so grain worker processes map
    the files themselves instead of receiving copies of the arrays.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} must be one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.manifest = load_manifest(root)
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            folder = self.root / self.split
            self._arrays = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r")
                for name in ("tokens", "condition", "song", "transpose")
            }
        return self._arrays

    @property
    def tokens(self) -> np.ndarray:
        return self._open()["tokens"]

    @property
    def condition(self) -> np.ndarray:
        return self._open()["condition"]

    @property
    def song(self) -> np.ndarray:
        return self._open()["song"]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        arrays = self._open()
        return {
            "tokens": arrays["tokens"][index].astype(np.int32),
            "condition": np.float32(arrays["condition"][index]),
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __repr__(self) -> str:
        return f"WindowSource(root={str(self.root)!r}, split={self.split!r})"


def make_loader(
    root: str | Path,
    split: str = "train",
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    worker_count: int = 0,
) -> grain.DataLoader:
    """A grain DataLoader of batches of one split (endless when num_epochs is None).

    Each process reads its own 1/process_count of the records; with
    drop_remainder every process sees the same number of batches.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    source = WindowSource(root, split)
    if len(source) < process_count * batch_size and drop_remainder:
        raise ValueError(
            f"{root}/{split}: {len(source)} windows cannot fill a batch of {batch_size} "
            f"on each of {process_count} processes"
        )
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=grain.ShardOptions(process_index, process_count, drop_remainder=True),
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[grain.Batch(batch_size, drop_remainder=drop_remainder)],
        worker_count=worker_count,
    )
