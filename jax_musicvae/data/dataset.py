"""Build an on-disk window dataset from MIDI files or the embedded corpus.

Layout of a dataset folder (all arrays load with ``np.load(..., mmap_mode="r")``)::

    manifest.json              settings, the bar grid (grid, steps_per_bar,
                               steps_per_beat, time_signature), counts (per split and
                               per declared meter), skipped files with reasons, sections
                               left out of usable files (reason -> files, sections),
                               content hash
    songs.jsonl                one JSON object per song, line i = song index i:
                               song_id, path, artist, title, msd_id, collection, label,
                               danceability (null when none), split, windows, meter
    <split>/tokens.npy         uint8 [N, T]  token windows (T = bars * steps_per_bar)
    <split>/song.npy           int32 [N]     song index of each window
    <split>/condition.npy      float32 [N]   the song's danceability (NaN when none)
    <split>/window_danceability.npy
                               float32 [N]   the rhythm estimate of the window itself
    <split>/transpose.npy      int8 [N]      semitones applied (0 = original window)

for split in train, validation, test. Songs are split, not windows, so no
song is in two splits; transposed copies are added to the train split only.

Robustness: every file is processed in isolation; any failure becomes a
skipped entry with a reason. Per-file results (windows and rhythm) are cached
under ``cache_dir/windows`` keyed by the file's bytes and the settings that
affect them, written atomically, so an interrupted build resumes where it
stopped. The dataset itself is written to a temporary sibling folder and
renamed into place at the end: a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tqdm

from jax_musicvae.atomic import atomic_file
from jax_musicvae.data import midi_io, windows
from jax_musicvae.data.meters import Grid, parse_meter
from jax_musicvae.data.representations import STEPS_PER_BAR, get_representation
from jax_musicvae.data.rhythm import window_danceability_estimates
from jax_musicvae.data.source import SPLITS, WINDOW_DANCEABILITY_FILE
from jax_musicvae.data.types import SongInfo, SongRhythm
from jax_musicvae.statistics import spearman

if TYPE_CHECKING:
    from jax_musicvae.data.danceability import DanceabilitySource

logger = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
FORMAT = "jax-musicvae-windows"
FORMAT_VERSION = 1
# Bump when per-file processing changes, so stale cache entries are not reused.
CACHE_VERSION = 3
_MSD_ID = re.compile(r"^TR[A-Z0-9]{16}$")
_DUPLICATE_SUFFIX = re.compile(r"\.\d+$")


class BuildError(RuntimeError):
    """The build cannot start or produced nothing usable."""


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Everything that determines the dataset's content (recorded in the manifest)."""

    representation: str = "pianoroll61"
    num_bars: int = 16
    max_silent_run: int | None = STEPS_PER_BAR
    max_windows_per_song: int | None = None
    transpose: tuple[int, ...] = ()
    seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    danceability: str | None = None
    missing: str = "drop"
    min_bpm: float = midi_io.MIN_BPM
    max_bpm: float = midi_io.MAX_BPM
    max_file_bytes: int = 16 * 2**20
    max_bars: int = midi_io.MAX_BARS
    # The bar grid and the declared meters kept on it (`meters.parse_meter`).
    meter: str = "duple"

    @property
    def grid(self) -> Grid:
        return parse_meter(self.meter)

    def __post_init__(self) -> None:
        get_representation(self.representation)
        parse_meter(self.meter)  # a bad --meter fails here, naming the choices
        if self.num_bars < 1:
            raise ValueError(f"num_bars={self.num_bars} must be >= 1")
        if len(self.split) != 3 or min(self.split) < 0 or not math.isclose(sum(self.split), 1):
            raise ValueError(f"split={self.split} must be 3 fractions >= 0 summing to 1")
        if self.missing != "drop" and not self.missing.startswith("fill:"):
            raise ValueError(f"missing={self.missing!r} must be 'drop' or 'fill:VALUE'")
        if self.missing.startswith("fill:"):
            value = float(self.missing[5:])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"missing fill value {value} must be in [0, 1]")

    def file_params(self) -> dict[str, Any]:
        """The settings that change per-file work: the cache key includes them."""
        return {
            "cache_version": CACHE_VERSION,
            "representation": self.representation,
            "num_bars": self.num_bars,
            "max_silent_run": self.max_silent_run,
            "min_bpm": self.min_bpm,
            "max_bpm": self.max_bpm,
            "max_file_bytes": self.max_file_bytes,
            "max_bars": self.max_bars,
            "meter": self.meter,
            # What the grid keeps, so a cache entry is not reused when a grid changes.
            "grid": [
                self.grid.name,
                self.grid.steps_per_bar,
                sorted(f"{a}/{b}:{r}" for (a, b), r in self.grid.meters.items()),
            ],
        }


@dataclasses.dataclass(frozen=True)
class FileResult:
    windows: np.ndarray | None
    rhythm: SongRhythm | None
    reason: str | None
    cached: bool
    # Sections left out of a usable file (reason -> count), e.g. a 3/4 stretch.
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    # Steps kept per declared meter (`ParsedMidi.meters`).
    meters: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def meter(self) -> str | None:
        """The declared meter of most of the kept steps."""
        return max(self.meters, key=self.meters.get) if self.meters else None


@dataclasses.dataclass(frozen=True)
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    cached_files: int
    seconds: float


def default_cache_dir() -> Path:
    """Shared cache (converted corpus, per-file windows): $JAX_MUSICVAE_CACHE or ~/.cache."""
    env = os.environ.get("JAX_MUSICVAE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jax_musicvae"


# ---------------------------------------------------------------- discovery


def _song_from_path(path: Path, root: Path, layout: str) -> SongInfo:
    rel = path.relative_to(root)
    msd_id = path.parent.name if _MSD_ID.match(path.parent.name) else None
    artist = title = None
    if layout == "clean_midi" and len(rel.parts) == 2:
        artist = rel.parts[0]
        title = _DUPLICATE_SUFFIX.sub("", path.stem)
    collection = layout if layout != "folder" else None
    return SongInfo(rel.as_posix(), str(path), artist, title, msd_id, collection)


def discover(
    source: str, *, layout: str = "auto", cache_dir: Path | None = None, workers: int = 2
) -> list[SongInfo]:
    """Songs of SOURCE: a MIDI file, a folder (recursive), or `corpus:NAME`.

    `layout` auto-detects Lakh folders: `clean_midi` (root folder named so;
    artist and title from `<Artist>/<Title>.mid`, duplicates `Title.1.mid`)
    and `lmd_matched` (MSD id from the parent folder, for any layout).
    """
    if source.startswith("corpus:"):
        try:
            from jax_musicvae.data import corpus
        except ImportError as e:
            raise BuildError(f"{source}: the embedded corpus is not available ({e})") from None
        name = source.split(":", 1)[1]
        if name not in corpus.CORPUS_NAMES:
            raise BuildError(f"unknown corpus {name!r}; valid: {', '.join(corpus.CORPUS_NAMES)}")
        cache = (cache_dir or default_cache_dir()) / "corpus"
        return corpus.materialize(name, cache, workers=workers)
    path = Path(source)
    if not path.exists():
        raise BuildError(f"{source}: no such file or folder")
    if path.is_file():
        return [_song_from_path(path, path.parent, "folder")]
    if layout == "auto":
        layout = "clean_midi" if path.name == "clean_midi" else "folder"
    if layout == "lmd_matched":
        layout = "folder"  # the MSD id is read from the path in every layout
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    return [_song_from_path(p, path, layout) for p in files]


# ---------------------------------------------------------------- per file


def _cache_path(cache_dir: Path, data: bytes, params: dict[str, Any]) -> Path:
    h = hashlib.blake2b(data, digest_size=20)
    h.update(json.dumps(params, sort_keys=True).encode())
    key = h.hexdigest()
    return cache_dir / key[:2] / f"{key}.npz"


def _load_cached(path: Path) -> FileResult | None:
    try:
        with np.load(path) as z:
            if "reason" in z:
                return FileResult(None, None, str(z["reason"]), True)
            rhythm = SongRhythm(
                z["onset_steps"],
                int(z["num_steps"]),
                float(z["tempo_bpm"]),
                int(z["drums"]),
                str(z["grid"]),
            )
            dropped = json.loads(str(z["dropped"]))
            meters = json.loads(str(z["meters"]))
            return FileResult(z["windows"], rhythm, None, True, dropped, meters)
    except Exception:  # a damaged cache entry is recomputed
        logger.debug("ignoring unreadable cache entry %s", path)
        return None


def _save_cached(path: Path, result: FileResult) -> None:
    with atomic_file(path) as f:
        if result.reason is not None:
            np.savez(f, reason=np.array(result.reason))
            return
        r = result.rhythm
        np.savez(
            f,
            windows=result.windows,
            onset_steps=r.onset_steps,
            num_steps=r.num_steps,
            tempo_bpm=r.tempo_bpm,
            drums=r.drum_onset_count,
            grid=np.array(r.grid),
            dropped=np.array(json.dumps(result.dropped)),
            meters=np.array(json.dumps(result.meters)),
        )


def process_file(path: str, params: dict[str, Any], cache_dir: Path | None) -> FileResult:
    """Windows and rhythm of one file, or the reason it is skipped. Never raises."""
    try:
        size = os.path.getsize(path)
        if size > params["max_file_bytes"]:
            limit = params["max_file_bytes"] / 2**20
            return FileResult(
                None, None, f"file too large ({size / 2**20:.1f} MiB > {limit:g} MiB)", False
            )
        data = Path(path).read_bytes()
    except OSError as e:
        return FileResult(None, None, f"cannot read file: {e.strerror or e}", False)
    cache_path = _cache_path(cache_dir, data, params) if cache_dir else None
    if cache_path is not None and cache_path.exists():
        cached = _load_cached(cache_path)
        if cached is not None:
            return cached
    rep = get_representation(params["representation"])
    try:
        parsed = midi_io.parse_midi(
            data,
            name=path,
            min_bpm=params["min_bpm"],
            max_bpm=params["max_bpm"],
            max_bars=params["max_bars"],
            grid=parse_meter(params["meter"]),
        )
        found = windows.cut_windows(
            windows.song_sequences(parsed, rep),
            rep,
            params["num_bars"],
            params["max_silent_run"],
            parsed.grid.steps_per_bar,
        )
        if len(found):
            result = FileResult(found, parsed.rhythm(), None, False, parsed.dropped, parsed.meters)
        else:
            result = FileResult(
                None,
                None,
                f"no window: no {params['num_bars']}-bar stretch with notes and at most "
                f"{params['max_silent_run']} silent steps in a row",
                False,
            )
    except midi_io.MidiError as e:
        result = FileResult(None, None, str(e).removeprefix(f"{path}: "), False)
    except Exception as e:  # bad input must never stop a build
        logger.debug("unexpected error on %s", path, exc_info=True)
        result = FileResult(None, None, f"unexpected error: {type(e).__name__}: {e}", False)
    if cache_path is not None:
        try:
            _save_cached(cache_path, result)
        except OSError as e:
            logger.warning("cannot write cache entry %s: %s", cache_path, e)
    return result


def _process_job(job: tuple[int, str, dict[str, Any], Path | None]) -> tuple[int, FileResult]:
    index, path, params, cache_dir = job
    return index, process_file(path, params, cache_dir)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork is fast to start; spawn when jax is loaded (forking its threads is unsafe)."""
    if sys.platform == "linux" and "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def process_files(
    songs: list[SongInfo],
    settings: BuildSettings,
    *,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[FileResult]:
    """Process every song's file (in parallel with `workers` > 1), in song order."""
    params = settings.file_params()
    jobs = [(i, s.path, params, cache_dir) for i, s in enumerate(songs)]
    results: list[FileResult | None] = [None] * len(jobs)
    bar = tqdm.tqdm(total=len(jobs), unit="file", desc="midi", disable=not progress)
    with bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                i, r = _process_job(job)
                results[i] = r
                bar.update()
        else:
            chunk = max(1, min(32, len(jobs) // (workers * 8)))
            with _pool_context().Pool(workers) as pool:
                for i, r in pool.imap_unordered(_process_job, jobs, chunksize=chunk):
                    results[i] = r
                    bar.update()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- song-level steps


def _song_key(seed: int, song_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{song_id}".encode(), digest_size=8).digest())


def split_songs(song_ids: list[str], fractions: tuple[float, ...], seed: int) -> list[str]:
    """Split name per song: order by a seeded hash of the id, then cut by fractions.

    A song's position depends only on (seed, id), so adding files moves few songs.
    With 3 or more songs every split with a non-zero fraction gets at least one.
    """
    n = len(song_ids)
    sizes = [round(n * f) for f in fractions[1:]]
    if n >= 3:
        sizes = [max(1, s) if f > 0 else 0 for s, f in zip(sizes, fractions[1:], strict=True)]
    order = sorted(range(n), key=lambda i: _song_key(seed, song_ids[i]))
    names = ["train"] * n
    pos = n - sum(sizes)
    for name, size in zip(SPLITS[1:], sizes, strict=True):
        for i in order[pos : pos + size]:
            names[i] = name
        pos += size
    return names


def _danceability(
    spec: str | DanceabilitySource | None,
    songs: list[SongInfo],
    rhythms: dict[str, SongRhythm],
) -> dict[str, float | None]:
    if spec is None or spec == "none":
        return {s.song_id: math.nan for s in songs}
    if isinstance(spec, str):
        try:
            from jax_musicvae.data.danceability import make_source
        except ImportError as e:
            raise BuildError(f"danceability source {spec!r} is not available ({e})") from None
        source = make_source(spec)
    else:
        source = spec
    return source.values(songs, rhythms)


def _write_array(path: Path, array: np.ndarray, digest: Any) -> None:
    np.save(path, array)
    digest.update(f"{path.parent.name}/{path.name}:{array.dtype}:{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise BuildError(f"{out} exists; pass --overwrite to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


_SplitRows = dict[str, list[tuple[int, np.ndarray, np.ndarray, float]]]


def _with_danceability(
    settings: BuildSettings, spec: Any, good: list[tuple[SongInfo, FileResult]]
) -> tuple[list[tuple[SongInfo, FileResult, float]], dict[str, int]]:
    """Each parsed song with its danceability in [0, 1] (missing ones dropped or filled
    as `settings.missing` says) and the counts of missing, dropped and filled songs."""
    values = _danceability(spec, [s for s, _ in good], {s.song_id: r.rhythm for s, r in good})
    counts = {"danceability_missing": 0, "danceability_dropped": 0, "danceability_filled": 0}
    kept: list[tuple[SongInfo, FileResult, float]] = []
    for song, result in good:
        value = values.get(song.song_id)
        if value is None or (spec not in (None, "none") and math.isnan(value)):
            counts["danceability_missing"] += 1
            if settings.missing == "drop":
                counts["danceability_dropped"] += 1
                continue
            value = float(settings.missing[5:])
            counts["danceability_filled"] += 1
        kept.append((song, result, float(np.clip(value, 0.0, 1.0))))
    return kept, counts


def _split_windows(
    kept: list[tuple[SongInfo, FileResult, float]], settings: BuildSettings, rep: Any
) -> tuple[_SplitRows, list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Songs assigned to splits, their windows capped (and transposed in train); the
    songs.jsonl rows; songs and windows per meter."""
    split_names = split_songs([s.song_id for s, _, _ in kept], settings.split, settings.seed)
    per_split: _SplitRows = {n: [] for n in SPLITS}
    song_rows = []
    by_meter: dict[str, dict[str, int]] = {}
    for index, ((song, result, value), split) in enumerate(zip(kept, split_names, strict=True)):
        rng = np.random.default_rng([settings.seed, _song_key(settings.seed, song.song_id)])
        wins = windows.cap_windows(result.windows, settings.max_windows_per_song, rng)
        shifts = settings.transpose if split == "train" else ()
        wins, amounts = windows.transpose_windows(wins, rep, shifts)
        per_split[split].append((index, wins, amounts, value))
        row = dataclasses.asdict(song)
        row.update(
            index=index,
            danceability=None if math.isnan(value) else value,
            split=split,
            windows=len(wins),
            meter=result.meter,
        )
        song_rows.append(row)
        entry = by_meter.setdefault(str(result.meter), {"songs": 0, "windows": 0})
        entry["songs"] += 1
        entry["windows"] += len(wins)
    return per_split, song_rows, dict(sorted(by_meter.items()))


def _write_splits(
    folder: Path, per_split: _SplitRows, rep: Any, grid: Any, length: int, digest: Any
) -> dict[str, dict[str, Any]]:
    """Each split's arrays into `folder`/<split>/; songs and windows per split."""
    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        rows = per_split[split]
        (folder / split).mkdir()
        tokens = np.concatenate([w for _, w, _, _ in rows] or [np.zeros((0, length))])
        song_ix = np.concatenate([np.full(len(w), i, np.int32) for i, w, _, _ in rows] or [[]])
        cond = np.concatenate([np.full(len(w), v, np.float32) for _, w, _, v in rows] or [[]])
        shift = np.concatenate([a for _, _, a, _ in rows] or [[]])
        _write_array(folder / split / "tokens.npy", tokens.astype(np.uint8), digest)
        _write_array(folder / split / "song.npy", song_ix.astype(np.int32), digest)
        _write_array(folder / split / "condition.npy", cond.astype(np.float32), digest)
        _write_array(folder / split / "transpose.npy", shift.astype(np.int8), digest)
        window_value = window_danceability_estimates(tokens, rep, grid)
        _write_array(folder / split / WINDOW_DANCEABILITY_FILE, window_value, digest)
        counts[split] = {"songs": len(rows), "windows": int(len(tokens))}
        labelled = ~np.isnan(cond)
        if labelled.sum() > 1:
            # What a model conditioned on the song's value can reach when it is
            # scored against each window's own rhythm (docs/danceability-control.md).
            rho = spearman(cond[labelled], window_value[labelled])
            counts[split]["song_vs_window_danceability_spearman"] = (
                None if math.isnan(rho) else round(rho, 4)
            )
    return counts


def build_dataset(
    source: str,
    out: str | Path,
    settings: BuildSettings = BuildSettings(),  # noqa: B008 (frozen, immutable)
    *,
    workers: int = 1,
    cache_dir: Path | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    danceability_source: DanceabilitySource | None = None,
    songs: list[SongInfo] | None = None,
    on_files_done: Callable[[], None] | None = None,
) -> BuildResult:
    """Build the dataset of SOURCE into `out` (see the module docstring for the layout).

    Phases: discover the songs, turn each file into windows (cached, in parallel),
    attach danceability, split by song, then write everything into a temporary
    folder that replaces `out` only when complete. `danceability_source` overrides
    `settings.danceability` (an object with `values(songs, rhythms)`); `songs`
    overrides discovery. Raises BuildError when nothing usable came out.
    `on_files_done` runs after the per-file work and before writing (tests use it
    to simulate an interrupt there).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise BuildError(f"{out} exists; pass --overwrite to replace it")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if songs is None:
        songs = discover(source, layout=layout, cache_dir=cache_root, workers=max(workers, 1))
    if not songs:
        raise BuildError(f"{source}: no MIDI files (.mid/.midi) found")
    if len({s.song_id for s in songs}) != len(songs):
        raise BuildError(f"{source}: duplicate song ids")
    rep = get_representation(settings.representation)
    results = process_files(
        songs, settings, workers=workers, cache_dir=cache_root / "windows", progress=progress
    )
    if on_files_done is not None:
        on_files_done()

    skipped = [
        {"song_id": s.song_id, "path": s.path, "reason": r.reason}
        for s, r in zip(songs, results, strict=True)
        if r.reason is not None
    ]
    good = [(s, r) for s, r in zip(songs, results, strict=True) if r.reason is None]
    # Parts of usable files that were left out (other meters, absurd tempi).
    partly_dropped: dict[str, dict[str, int]] = {}
    for _, r in good:
        for reason, n in r.dropped.items():
            entry = partly_dropped.setdefault(reason, {"files": 0, "sections": 0})
            entry["files"] += 1
            entry["sections"] += n
    spec = danceability_source or settings.danceability
    if spec is None and source.startswith("corpus:"):
        spec = "labels"
    kept, danceability_counts = _with_danceability(settings, spec, good)
    if not kept:
        raise BuildError(
            f"{source}: nothing usable: {len(skipped)} of {len(songs)} files skipped, "
            f"{danceability_counts['danceability_dropped']} songs dropped for lack of "
            f"danceability"
        )
    per_split, song_rows, by_meter = _split_windows(kept, settings, rep)

    grid = settings.grid
    length = settings.num_bars * grid.steps_per_bar
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        digest = hashlib.sha256()
        counts = _write_splits(tmp, per_split, rep, grid, length, digest)
        songs_text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in song_rows)
        (tmp / "songs.jsonl").write_text(songs_text)
        digest.update(songs_text.encode())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": source,
            "representation": rep.name,
            "depth": rep.depth,
            "num_bars": settings.num_bars,
            "grid": grid.name,
            "steps_per_bar": grid.steps_per_bar,
            "steps_per_beat": grid.steps_per_beat,
            "time_signature": list(grid.time_signature),
            "sequence_length": length,
            "settings": {
                **dataclasses.asdict(settings),
                "danceability": spec if isinstance(spec, str | None) else type(spec).__name__,
            },
            "counts": {
                "files": len(songs),
                "parsed": len(good),
                "skipped": len(skipped),
                "songs": len(kept),
                "windows": sum(c["windows"] for c in counts.values()),
                **danceability_counts,
                "splits": counts,
                "meters": by_meter,
            },
            "skipped": skipped,
            "dropped_sections": dict(sorted(partly_dropped.items())),
            "content_hash": digest.hexdigest(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cached = sum(r.cached for r in results)
    return BuildResult(out, manifest, cached, time.perf_counter() - start)
