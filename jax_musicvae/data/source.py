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

from jax_musicvae.data.meters import Grid, grid_named
from jax_musicvae.data.representations import get_representation
from jax_musicvae.data.rhythm import window_danceability_estimates

SPLITS = ("train", "validation", "test")
# What a window's `condition` is: its song's danceability (the dataset's source), or
# the rhythm estimate of the window itself (`data.rhythm.melody_danceability`).
DANCEABILITY_LEVELS = ("song", "window")
WINDOW_DANCEABILITY_FILE = "window_danceability.npy"


def load_manifest(root: str | Path) -> dict[str, Any]:
    """The dataset's manifest.json, with a clear error when `root` is not a dataset."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{root}: not a dataset (no manifest.json); run `musicvae data build`"
        )
    return json.loads(path.read_text())


def dataset_grid(manifest: dict[str, Any]) -> Grid:
    """The bar grid of a dataset (datasets built before grids existed are duple)."""
    return grid_named(manifest.get("grid", "duple"))


def dataset_mismatch(
    manifest: dict[str, Any], input_depth: int, sequence_length: int, steps_per_bar: int
) -> str | None:
    """Why a dataset's windows do not fit a model (None when they do)."""
    grid = dataset_grid(manifest)
    if grid.steps_per_bar != steps_per_bar:
        return (
            f"bars of {grid.steps_per_bar} steps (the {grid.name} grid) but the model's "
            f"steps_per_bar is {steps_per_bar}; train with --set "
            f"model.steps_per_bar={grid.steps_per_bar}"
        )
    if manifest["depth"] != input_depth:
        return (
            f"{manifest['representation']} has depth {manifest['depth']} but the model's "
            f"input depth is {input_depth}"
        )
    if manifest["sequence_length"] != sequence_length:
        return (
            f"windows of {manifest['sequence_length']} steps but the model expects "
            f"num_bars x steps_per_bar = {sequence_length}"
        )
    return None


def load_songs(root: str | Path) -> list[dict[str, Any]]:
    """Per-song records (songs.jsonl), indexed by the song index of each window."""
    lines = (Path(root) / "songs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


class WindowSource:
    """One split as a grain RandomAccessDataSource (len + getitem), memory-mapped.

    Pickles as (root, split) and reopens lazily, so grain worker processes map
    the files themselves instead of receiving copies of the arrays.
    """

    def __init__(self, root: str | Path, split: str = "train", danceability: str = "song") -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} must be one of {', '.join(SPLITS)}")
        if danceability not in DANCEABILITY_LEVELS:
            raise ValueError(
                f"danceability={danceability!r} must be one of {', '.join(DANCEABILITY_LEVELS)}"
            )
        self.root = Path(root)
        self.split = split
        self.danceability = danceability
        self.manifest = load_manifest(root)
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            folder = self.root / self.split
            self._arrays = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r")
                for name in ("tokens", "condition", "song", "transpose")
            }
            window = folder / WINDOW_DANCEABILITY_FILE
            if window.is_file():
                self._arrays["window_danceability"] = np.load(window, mmap_mode="r")
            else:  # a dataset built before the file existed: estimate it from the tokens
                rep = get_representation(self.manifest["representation"])
                tokens = self._arrays["tokens"]
                grid = dataset_grid(self.manifest)
                estimates = window_danceability_estimates(tokens, rep, grid)
                self._arrays["window_danceability"] = estimates
        return self._arrays

    @property
    def tokens(self) -> np.ndarray:
        return self._open()["tokens"]

    @property
    def song_danceability(self) -> np.ndarray:
        """The song's danceability per window (NaN where the dataset has none)."""
        return self._open()["condition"]

    @property
    def window_danceability(self) -> np.ndarray:
        """The rhythm estimate of each window itself."""
        return self._open()["window_danceability"]

    @property
    def condition(self) -> np.ndarray:
        """The danceability this source was opened with (`song` or `window`) per window."""
        return self._open()["condition" if self.danceability == "song" else "window_danceability"]

    @property
    def song(self) -> np.ndarray:
        return self._open()["song"]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        arrays = self._open()
        return {
            "tokens": arrays["tokens"][index].astype(np.int32),
            "condition": np.float32(self.condition[index]),
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __repr__(self) -> str:
        # Grain checks a resumed loader's source by its repr: naming the dataset by its
        # content lets a run resume after its dataset folder moved.
        content = self.manifest.get("content_hash")
        if content is None:
            return self.path_repr()
        return (
            f"WindowSource(dataset={content[:16]!r}, split={self.split!r}, "
            f"danceability={self.danceability!r})"
        )

    def path_repr(self) -> str:
        """The repr by folder, which checkpoints saved before the content-named one hold."""
        return (
            f"WindowSource(root={str(self.root)!r}, split={self.split!r}, "
            f"danceability={self.danceability!r})"
        )


def most_frequent_token(root: str | Path, split: str = "train") -> int:
    """The most frequent token of a split (of the training split, for the baseline)."""
    source = WindowSource(root, split)
    return int(np.argmax(np.bincount(source.tokens.ravel(), minlength=source.manifest["depth"])))
