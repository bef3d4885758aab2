"""Training windows: N bars cut from token sequences with a hop of one bar.

The per-song steps here are deterministic given the song (cut, filter, de-dup),
so their result can be cached per file; the seed-dependent steps (cap per
song, transposition) run afterwards in the dataset build.
"""

from __future__ import annotations

import numpy as np

from jax_musicvae.data.midi_io import ParsedMidi
from jax_musicvae.data.representations import STEPS_PER_BAR, Representation


def longest_silent_run(windows: np.ndarray, representation: Representation) -> np.ndarray:
    """Longest run of consecutive steps with no sounding note, per window [W]."""
    silent = ~representation.sounding(windows)
    count = np.cumsum(silent, axis=-1)
    reset = np.maximum.accumulate(np.where(silent, 0, count), axis=-1)
    return (count - reset).max(axis=-1, initial=0)


def song_sequences(parsed: ParsedMidi, representation: Representation) -> list[np.ndarray]:
    """Bar-aligned sequences of a song, never crossing a section boundary.

    pianoroll61 keeps the instrument with the most notes (as the original);
    melody90 extracts melodies from every instrument (as Magenta).
    """
    tracks = (
        [parsed.busiest_track()] if representation.name == "pianoroll61" else list(parsed.tracks)
    )
    out = []
    bar = parsed.grid.steps_per_bar
    for section in parsed.sections:
        for track in tracks:
            notes = parsed.section_notes(track, section)
            out.extend(representation.sequences(notes, section.num_steps, bar))
    return out


def cut_windows(
    sequences: list[np.ndarray],
    representation: Representation,
    num_bars: int,
    max_silent_run: int | None = STEPS_PER_BAR,
    steps_per_bar: int = STEPS_PER_BAR,
) -> np.ndarray:
    """All windows of `num_bars` bars (hop one bar), silent ones dropped, de-duplicated.

    A window is dropped when it has no note at all or, with `max_silent_run`
    set, when more than that many consecutive steps are silent (the original
    dropped windows with more than 16). Duplicates keep their first position.
    """
    length = num_bars * steps_per_bar
    parts = [
        np.lib.stride_tricks.sliding_window_view(seq, length)[::steps_per_bar]
        for seq in sequences
        if len(seq) >= length
    ]
    if not parts:
        return np.zeros((0, length), np.uint8)
    windows = representation.canonical(np.concatenate(parts).astype(np.uint8))
    run = longest_silent_run(windows, representation)
    keep = run < length
    if max_silent_run is not None:
        keep &= run <= max_silent_run
    windows = windows[keep]
    first: dict[bytes, int] = {}
    for i, row in enumerate(windows):
        first.setdefault(row.tobytes(), i)  # a dict is ~10x faster than np.unique(axis=0)
    return windows[list(first.values())]


def cap_windows(windows: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most `cap` windows of one song, chosen at random, kept in song order."""
    if cap is None or len(windows) <= cap:
        return windows
    return windows[np.sort(rng.choice(len(windows), cap, replace=False))]


def transpose_windows(
    windows: np.ndarray, representation: Representation, shifts: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Each window plus a copy per shift (semitones) that stays in the pitch range.

    Returns (windows, shift per window); shift 0 is the original and always kept.
    """
    outs, amounts = [windows], [np.zeros(len(windows), np.int8)]
    for k in shifts:
        if k == 0:
            continue
        shifted, ok = representation.transpose(windows, k)
        outs.append(shifted[ok])
        amounts.append(np.full(int(ok.sum()), k, np.int8))
    return np.concatenate(outs), np.concatenate(amounts)
