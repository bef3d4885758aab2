"""Per-song danceability sources behind `musicvae data build --danceability SPEC`.

Why several: the original read Spotify's audio features, which Spotify closed
to new apps in Nov 2024, so the project also needs offline values. Every source
maps songs to a value in 0..1 or None (unknown); the builder drops or fills the
Nones as the user chooses.

- ``spotify``: the original method (see `jax_musicvae.data.spotify`).
- ``table:FILE``: a CSV with a header and a ``danceability`` column plus either
  ``path`` (a MIDI path: absolute, relative to the CSV's folder, or the song id,
  i.e. the path relative to the source root) or ``artist`` and ``title``
  (matched case- and space-insensitively). Bad rows are errors naming the file
  and line.
- ``labels``: dance-type labels (the embedded folk corpus) on the scale
  `LABEL_DANCEABILITY`: tunes made for dancing high (reel 0.95 ... march 0.6),
  songs and ballads low, airs, laments, lullabies, hymns and chorales lowest;
  an unknown or missing label is None.
- ``rhythm``: `jax_musicvae.data.rhythm.estimate_danceability` of the MIDI.
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Protocol

from jax_musicvae.data.rhythm import estimate_danceability
from jax_musicvae.data.types import SongInfo, SongRhythm

SPECS = ("spotify", "table:FILE", "labels", "rhythm")

# Scale for `labels`: quick, steady dance forms highest; forms danced to but slower or
# stately lower; sung forms low; slow and sacred forms lowest.
LABEL_DANCEABILITY: dict[str, float] = {
    "reel": 0.95,
    "polka": 0.95,
    "jig": 0.9,
    "slip jig": 0.9,
    "slide": 0.9,
    "hornpipe": 0.85,
    "clog": 0.85,
    "fling": 0.85,
    "schottische": 0.85,
    "rant": 0.85,
    "strathspey": 0.8,
    "set dance": 0.8,
    "dance": 0.75,
    "quickstep": 0.75,
    "waltz": 0.7,
    "mazurka": 0.7,
    "march": 0.6,
    "gavotte": 0.6,
    "minuet": 0.55,
    "song": 0.35,
    "ballad": 0.25,
    "air": 0.15,
    "lament": 0.1,
    "lullaby": 0.1,
    "hymn": 0.1,
    "chorale": 0.05,
}


class DanceabilitySource(Protocol):
    """Maps songs (and their parsed rhythm) to danceability in 0..1, None when unknown."""

    def values(
        self, songs: list[SongInfo], rhythms: dict[str, SongRhythm]
    ) -> dict[str, float | None]: ...


class TableError(ValueError):
    """A danceability table cannot be used; the message names the file and line."""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _norm_path(path: str) -> str:
    return os.path.normpath(path).replace("\\", "/")


class TableSource:
    """`table:FILE`: danceability from a user-supplied CSV (read once, validated fully)."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = pathlib.Path(file)
        self.by_path: dict[str, float] = {}
        self.by_artist_title: dict[tuple[str, str], float] = {}
        self._read()

    def _read(self) -> None:
        try:
            with self.file.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except OSError as exc:
            raise TableError(f"{self.file}: cannot read danceability table: {exc}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TableError(f"{self.file}: not a UTF-8 CSV file: {exc}") from None
        if not rows:
            raise TableError(f"{self.file}: empty table (expected a header line)")
        header = [_norm(h) for h in rows[0]]
        if "danceability" not in header:
            raise TableError(f"{self.file}:1: header has no 'danceability' column: {rows[0]}")
        has_path = "path" in header
        has_names = "artist" in header and "title" in header
        if not (has_path or has_names):
            raise TableError(
                f"{self.file}:1: header needs a 'path' column or 'artist' and 'title' columns"
            )
        col = {
            name: header.index(name)
            for name in ("danceability", "path", "artist", "title")
            if name in header
        }
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TableError(
                    f"{self.file}:{line}: {len(row)} fields, the header has {len(header)}"
                )
            raw = row[col["danceability"]].strip()
            try:
                value = float(raw)
            except ValueError:
                raise TableError(
                    f"{self.file}:{line}: danceability {raw!r} is not a number"
                ) from None
            if not 0.0 <= value <= 1.0:
                raise TableError(f"{self.file}:{line}: danceability {value:g} is outside 0..1")
            keyed = False
            if has_path and row[col["path"]].strip():
                path = row[col["path"]].strip()
                self.by_path[_norm_path(path)] = value
                if not os.path.isabs(path):  # also relative to the table's folder
                    self.by_path[_norm_path(str(self.file.parent.resolve() / path))] = value
                keyed = True
            if has_names and row[col["artist"]].strip() and row[col["title"]].strip():
                key = (_norm(row[col["artist"]]), _norm(row[col["title"]]))
                self.by_artist_title[key] = value
                keyed = True
            if not keyed:
                raise TableError(f"{self.file}:{line}: row has neither a path nor artist and title")

    def value(self, song: SongInfo) -> float | None:
        for path in (song.path, str(pathlib.Path(song.path).resolve()), song.song_id):
            if path and _norm_path(path) in self.by_path:
                return self.by_path[_norm_path(path)]
        if song.artist and song.title:
            return self.by_artist_title.get((_norm(song.artist), _norm(song.title)))
        return None

    def values(
        self, songs: list[SongInfo], rhythms: dict[str, SongRhythm] | None = None
    ) -> dict[str, float | None]:
        return {s.song_id: self.value(s) for s in songs}


class LabelSource:
    """`labels`: a dance-type label mapped through `LABEL_DANCEABILITY`."""

    def __init__(self, scale: dict[str, float] | None = None) -> None:
        self.scale = dict(LABEL_DANCEABILITY if scale is None else scale)

    def values(
        self, songs: list[SongInfo], rhythms: dict[str, SongRhythm] | None = None
    ) -> dict[str, float | None]:
        return {s.song_id: self.scale.get(_norm(s.label)) if s.label else None for s in songs}


class RhythmSource:
    """`rhythm`: the symbolic estimate; None for a song whose rhythm was not parsed."""

    def values(
        self, songs: list[SongInfo], rhythms: dict[str, SongRhythm]
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for song in songs:
            rhythm = rhythms.get(song.song_id)
            out[song.song_id] = None if rhythm is None else estimate_danceability(rhythm)
        return out


def default_spotify_cache() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jax_musicvae" / "spotify_danceability.json"


def make_source(spec: str, **options: object) -> DanceabilitySource:
    """Build the source named by `spec`; `options` go to its constructor.

    `spotify` takes `cache_path` (default `default_spotify_cache()`) and the
    bounds of `SpotifyDanceability`; `labels` takes an optional `scale`.
    """
    if spec == "spotify":
        from jax_musicvae.data.spotify import SpotifyDanceability

        cache_path = options.pop("cache_path", None) or default_spotify_cache()
        return SpotifyDanceability(pathlib.Path(str(cache_path)), **options)  # type: ignore[arg-type]
    if spec.startswith("table:"):
        file = spec.removeprefix("table:")
        if not file:
            raise ValueError("danceability source 'table:' needs a file: table:FILE.csv")
        return TableSource(file)
    if spec == "labels":
        return LabelSource(**options)  # type: ignore[arg-type]
    if spec == "rhythm":
        return RhythmSource()
    raise ValueError(f"unknown danceability source {spec!r}; valid: {', '.join(SPECS)}")
