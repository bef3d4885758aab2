"""Benchmark the dataset build: files/s and windows/s on a MIDI folder.

Without a folder it generates multi-track pop-like songs (drums, bass, piano
chords, melody, pad, arpeggio guitar; about 100 bars and 6,000 notes each,
some with a pickup, a tempo change or a 3/4 bridge), close to Lakh clean_midi
files in size. The build runs cold (empty per-file cache), then warm.

    python scripts/bench_data.py [FOLDER] [--files 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import symusic

from jax_musicvae.data.dataset import BuildSettings, build_dataset, discover

TPQ = 480
BAR = 4 * TPQ


def _track(name: str, program: int, notes: list[tuple[int, int, int, int]], drum: bool = False):
    track = symusic.Track(name, program, drum)
    arr = np.array(notes, np.int64)
    track.notes = symusic.core.NoteTickList.from_numpy(
        arr[:, 0].astype(np.int32),
        arr[:, 1].astype(np.int32),
        arr[:, 2].astype(np.int8),
        arr[:, 3].astype(np.int8),
    )
    return track


def pop_song(rng: np.random.Generator, bars: int = 100) -> bytes:
    """One synthetic pop arrangement as MIDI bytes."""
    key = int(rng.integers(0, 12))
    progression = [[0, 4, 7], [9, 12, 16], [5, 9, 12], [7, 11, 14]]
    score = symusic.Score(TPQ)
    start = 0
    if rng.random() < 0.3:  # a 2/4 pickup bar
        score.time_signatures.append(symusic.TimeSignature(0, 2, 4))
        start = 2 * TPQ
    score.time_signatures.append(symusic.TimeSignature(start, 4, 4))
    bpm = float(rng.uniform(80, 140))
    score.tempos.append(symusic.Tempo(0, bpm))
    if rng.random() < 0.3:
        score.tempos.append(symusic.Tempo(start + BAR * bars // 2, bpm * 1.05))
    drums, bass, chords, melody, pad, guitar = [], [], [], [], [], []
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    for b in range(bars):
        t0 = start + b * BAR
        chord = progression[(b // 2) % 4]
        root = 48 + key + chord[0]
        for s in range(16):
            t = t0 + s * TPQ // 4
            drums.append((t, 60, 42, 70))
            if s % 8 == 0:
                drums.append((t, 60, 36, 100))
            if s % 8 == 4:
                drums.append((t, 60, 38, 100))
            if s % 4 == 2:
                guitar.append((t, TPQ // 4, 60 + key + chord[s % 3], 70))
        for e in range(8):
            bass.append((t0 + e * TPQ // 2, TPQ // 2 - 20, root - 12 + 12 * (e % 2 == 1), 90))
        for q in range(4):
            for c in chord:
                chords.append((t0 + q * TPQ, TPQ - 30, 60 + key + c, 60))
        for c in chord:
            pad.append((t0, BAR, 72 + key + c, 40))
        t = 0
        while t < BAR:
            dur = int(rng.choice([TPQ // 4, TPQ // 2, TPQ]))
            if rng.random() < 0.85:
                pitch = 72 + key + int(scale[rng.integers(0, 7)]) - 12 * int(rng.random() < 0.3)
                melody.append((t0 + t, int(dur * rng.uniform(0.5, 1.0)) or 1, pitch, 90))
            t += dur
    for name, program, notes, drum in (
        ("Drums", 0, drums, True),
        ("Bass", 33, bass, False),
        ("Piano", 0, chords, False),
        ("Lead", 80, melody, False),
        ("Strings", 48, pad, False),
        ("Guitar", 25, guitar, False),
    ):
        score.tracks.append(_track(name, program, notes, drum))
    return score.dumps_midi()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="MIDI folder (default: generate pop songs)")
    parser.add_argument("--files", type=int, default=200, help="songs to generate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--representation", default="pianoroll61")
    parser.add_argument("--bars", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else tmp / "midi"
        if not args.folder:
            folder.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.files):
                (folder / f"song{i:04d}.mid").write_bytes(pop_song(rng))
        songs = discover(str(folder))
        size = sum(Path(s.path).stat().st_size for s in songs) / len(songs) / 1024
        t = time.perf_counter()
        notes = sum(symusic.Score(s.path).note_num() for s in songs)
        parse = len(songs) / (time.perf_counter() - t)
        print(f"{len(songs)} files, {size:.0f} KiB and {notes / len(songs):.0f} notes on average")
        print(f"symusic parse alone: {parse:.0f} files/s (1 process)")
        settings = BuildSettings(
            representation=args.representation, num_bars=args.bars, danceability="none"
        )
        for run in ("cold", "warm"):
            result = build_dataset(
                str(folder),
                tmp / f"out-{run}",
                settings,
                workers=args.workers,
                cache_dir=tmp / "cache",
                progress=False,
            )
            counts = result.manifest["counts"]
            print(
                f"build ({run}, {args.workers} workers, {args.representation}, "
                f"{args.bars} bars): {counts['files'] / result.seconds:.0f} files/s, "
                f"{counts['windows'] / result.seconds:.0f} windows/s "
                f"({counts['parsed']} usable, {counts['windows']} windows, {result.seconds:.2f} s)"
            )


if __name__ == "__main__":
    main()
