"""Token representations and window cutting: exact tokens for constructed notes."""

from __future__ import annotations

import numpy as np
import pytest

from jax_musicvae.data import windows
from jax_musicvae.data.representations import Melody90, Notes, PianoRoll61, get_representation

PR, MEL = PianoRoll61(), Melody90()


def notes(*triples: tuple[int, int, int]) -> Notes:
    a = np.array(triples, np.int32).reshape(-1, 3)
    return Notes(a[:, 0], a[:, 1], a[:, 2])


def random_melody(rng: np.random.Generator, length: int) -> np.ndarray:
    """A canonical melody90 sequence: events at random steps, offs only after ons."""
    tokens = np.zeros(length, np.uint8)
    pos = np.sort(rng.choice(length, size=length // 3, replace=False))
    tokens[pos] = rng.integers(2, 90, size=len(pos))
    offs = pos[rng.random(len(pos)) < 0.3]
    tokens[offs] = 1
    return MEL.canonical(tokens[None])[0]


def test_pianoroll_skyline_crop_and_silence():
    tokens = PR.encode(notes((0, 8, 60), (2, 4, 72), (4, 6, 90), (10, 12, 23)), 16)
    expected = [36, 36, 48, 48, 36, 36, 36, 36] + [60] * 8
    assert tokens.tolist() == expected
    assert tokens.dtype == np.uint8


def test_pianoroll_decode_merges_runs_and_round_trips():
    tokens = np.array([0, 0, 5, 60, 60, 59, 59, 59], np.uint8)
    got = PR.decode(tokens)
    assert got.onsets.tolist() == [0, 2, 5]
    assert got.ends.tolist() == [2, 3, 8]
    assert got.pitches.tolist() == [24, 29, 83]
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 61, 64).astype(np.uint8)
        np.testing.assert_array_equal(PR.encode(PR.decode(t), 64), t)


def test_melody_encode_monophonic_rules():
    # Chord at 0 keeps the highest; a note at 4 cuts it; note off at 10; rest to 16.
    tokens = MEL.encode(notes((0, 8, 60), (0, 8, 67), (4, 10, 62), (12, 12, 50)), 16)
    expected = [2 + 67 - 21, 0, 0, 0, 2 + 62 - 21, 0, 0, 0, 0, 0, 1, 0, 2 + 50 - 21, 1, 0, 0]
    assert tokens.tolist() == expected
    got = MEL.decode(tokens)
    assert got.onsets.tolist() == [0, 4, 12]
    assert got.ends.tolist() == [4, 10, 13]
    assert got.pitches.tolist() == [67, 62, 50]


def test_melody_round_trip_identity_and_canonical():
    rng = np.random.default_rng(1)
    for _ in range(50):
        t = random_melody(rng, 64)
        np.testing.assert_array_equal(MEL.encode(MEL.decode(t), 64), t)
    raw = np.array([[1, 0, 30, 1, 1, 0, 0, 40]], np.uint8)
    assert MEL.canonical(raw).tolist() == [[0, 0, 30, 1, 0, 0, 0, 40]]
    assert MEL.sounding(raw[:, :]).tolist() == [
        [False, False, True, False, False] + [False] * 2 + [True]
    ]


def test_melody_sequences_split_at_one_bar_gap():
    n = notes((20, 24, 60), (40, 44, 62), (80, 84, 64))  # gap 16 -> split; gap 36 -> split
    seqs = MEL.sequences(n, 128)
    # Melodies start at the bar of their first note, end at the bar after their last note.
    assert [len(s) for s in seqs] == [16, 16, 16]
    assert seqs[0][4] == 2 + 60 - 21 and seqs[0][8] == 1


def test_transpose_validity():
    t = np.array([[0, 59, 60], [10, 60, 60]], np.uint8)
    shifted, ok = PR.transpose(t, 1)
    assert ok.tolist() == [False, True]
    assert shifted[1].tolist() == [11, 60, 60]
    m = np.array([[2, 0, 1], [89, 0, 1]], np.uint8)
    shifted, ok = MEL.transpose(m, -1)
    assert ok.tolist() == [False, True]
    assert shifted[1].tolist() == [88, 0, 1]


def test_cut_windows_counts_dedup_silence():
    bar = np.full(16, 60, np.uint8)
    a, b = bar.copy(), bar.copy()
    a[:4] = 10
    b[:4] = 20
    silent = bar
    seq = np.concatenate([a, b, a, b, silent, silent, a])  # 7 bars
    w = windows.cut_windows([seq], PR, num_bars=2, max_silent_run=16)
    # 6 windows: ab ba ab b_ __ _a; ab duplicate; "__" fully silent; b_ has 28 silent
    # steps in a row, _a exactly 16 (kept).
    assert w.shape == (3, 32)
    assert w[:, 0].tolist() == [10, 20, 60]
    w_all = windows.cut_windows([seq], PR, num_bars=2, max_silent_run=None)
    assert len(w_all) == 4  # ab, ba, b_, _a (all-silent always dropped)
    assert len(windows.cut_windows([seq[:16]], PR, num_bars=2)) == 0
    runs = windows.longest_silent_run(w_all, PR)
    assert runs.tolist() == [12, 12, 28, 16]


def test_cap_and_transpose_windows():
    w = np.tile(np.arange(10, dtype=np.uint8)[:, None], (1, 32))
    capped = windows.cap_windows(w, 3, np.random.default_rng(0))
    assert len(capped) == 3 and np.all(np.diff(capped[:, 0].astype(int)) > 0)
    assert windows.cap_windows(w, None, np.random.default_rng(0)) is w
    out, shift = windows.transpose_windows(w, PR, (-1, 0, 2))
    # -1 is invalid for the window of token 0; +2 valid for all (max token 9).
    assert len(out) == 10 + 9 + 10
    assert np.bincount(shift + 1).tolist() == [9, 10, 0, 10]


def test_unknown_representation():
    with pytest.raises(ValueError, match="melody90"):
        get_representation("midi-like")
