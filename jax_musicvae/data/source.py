"""A built dataset read from disk: its manifest, songs and memory-mapped windows.

Numpy only, so the generation API and the analysis can read held-out windows
without importing the training loader (grain) or the dataset builder. The
arrays are memory-mapped, so opening a dataset costs nothing and a record is a
slice of the page cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")


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


def most_frequent_token(root: str | Path, split: str = "train") -> int:
    """The most frequent token of a split (of the training split, for the baseline)."""
    source = WindowSource(root, split)
    return int(np.argmax(np.bincount(source.tokens.ravel(), minlength=source.manifest["depth"])))
