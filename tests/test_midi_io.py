"""Parsing real and constructed MIDI files, writing tokens back, piano-roll PNGs."""

from __future__ import annotations

import io
import re

import mido
import numpy as np
import pytest
import symusic
from helpers import MUSIC21_MIDI, off_grid, scale_notes, write_midi_file

from jax_musicvae.data import midi_io
from jax_musicvae.data.pianoroll import save_pianoroll, save_pianoroll_grid
from jax_musicvae.data.representations import Melody90, PianoRoll61

PR, MEL = PianoRoll61(), Melody90()
# Files with a usable 4/4 section (the others are in 3/4, 6/8, 2/4 ...).
REAL_FILES = ["test01.mid", "test02.mid", "test06.mid", "test07.mid", "test10.mid", "test18.mid"]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_round_trip(tmp_path, name):
    parsed = midi_io.parse_midi(MUSIC21_MIDI / name)
    for rep in (PR, MEL):
        tokens = midi_io.song_tokens(parsed, rep)
        assert len(tokens) == parsed.num_steps and len(tokens) % 16 == 0
        once = midi_io.read_tokens(
            midi_io.write_midi(tokens, rep, tmp_path / "a.mid", tempo_bpm=97), rep, len(tokens)
        )
        twice = midi_io.read_tokens(
            midi_io.write_midi(once, rep, tmp_path / "b.mid"), rep, len(tokens)
        )
        np.testing.assert_array_equal(twice, once)  # idempotent after one pass
        if rep is MEL:
            np.testing.assert_array_equal(once, rep.canonical(tokens[None])[0])
        else:
            np.testing.assert_array_equal(once, tokens)


def test_melody_tokens_midi_tokens_identity(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(10):
        tokens = np.zeros(64, np.uint8)
        pos = np.sort(rng.choice(64, 20, replace=False))
        tokens[pos] = rng.integers(1, 90, 20)
        tokens = MEL.canonical(tokens[None])[0]
        if not (tokens >= 2).any():
            continue
        path = midi_io.write_midi(tokens, MEL, tmp_path / f"{i}.mid", tempo_bpm=60 + 10 * i)
        np.testing.assert_array_equal(midi_io.read_tokens(path, MEL, 64), tokens)


def test_written_tempo_default_and_chosen(tmp_path):
    tokens = np.full(32, 60, np.uint8)
    tokens[:8] = 36
    default = symusic.Score(str(midi_io.write_midi(tokens, PR, tmp_path / "a.mid")))
    chosen = symusic.Score(str(midi_io.write_midi(tokens, PR, tmp_path / "b.mid", tempo_bpm=93)))
    assert round(default.tempos[0].qpm) == 120
    assert round(chosen.tempos[0].qpm) == 93
    with pytest.raises(ValueError, match="tempo_bpm"):
        midi_io.write_midi(tokens, PR, tmp_path / "c.mid", tempo_bpm=5000)


def test_sections_tempo_and_meter_changes_pickup(tmp_path):
    tpq = 480
    bar = 4 * tpq
    notes = scale_notes(10, tpq)
    path = write_midi_file(
        tmp_path / "x.mid",
        [(0, False, notes), (0, True, [(0, 60, 36), (bar * 3, 60, 38)])],
        tempos=((0, 100.0), (int(bar * 3.5), 140.0), (bar * 6, 2000.0)),
        # A 1/4 pickup, then 4/4 from tick 480, then a 3/4 stretch, then 4/4 again.
        sigs=((0, 1, 4), (tpq, 4, 4), (tpq + bar * 7, 3, 4), (tpq + bar * 7 + 3 * tpq, 4, 4)),
    )
    parsed = midi_io.parse_midi(path)
    # 4/4 from 480: tempo change at 3.5 bars (abs) -> next bar line of the 4/4 grid.
    got = [(s.start, s.num_steps, s.tempo_bpm) for s in parsed.sections]
    assert got[0] == (0, 64, 100.0)
    assert got[1][1:] == (32, 140.0)
    assert parsed.dropped == {
        "meter 1/4 (a pickup, or no clear bar length in the notes)": 1,
        off_grid("3/4", "12", "triple"): 1,
        "tempo 2000 bpm outside [20, 400]": 2,
    }
    # The pickup's notes (ticks 0 and 240) are dropped; the 4/4 grid starts at tick 480.
    track = parsed.tracks[0]
    assert track.notes.onsets[0] == 0 and track.notes.pitches[0] == 62
    assert parsed.drum_onset_count == 1  # the drum at tick 0 is in the pickup
    rhythm = parsed.rhythm()
    assert rhythm.num_steps == 96
    assert rhythm.onset_steps.tolist()[:3] == [0, 2, 4]
    assert rhythm.tempo_bpm == pytest.approx((64 * 100 + 32 * 140) / 96)


def eighths_on_quarters(quarters: int, tpq: int = 480, base: int = 60):
    """An eighth note on every quarter, pitch rising by one each time."""
    return [(q * tpq, tpq // 2, base + q) for q in range(quarters)]


def expected_melody(pitches: list[int], num_steps: int) -> list[int]:
    """melody90 tokens of eighth notes on every quarter (4 steps): on, hold, off, hold."""
    tokens = [0] * num_steps
    for i, p in enumerate(pitches):
        tokens[4 * i] = p - 21 + 2
        tokens[4 * i + 2] = 1
    return tokens


def test_two_four_bars_are_paired_and_a_dangling_half_bar_dropped(tmp_path):
    tpq = 480
    # 5 bars of 2/4 (10 quarters): bars 1+2 and 3+4 are 16-step bars, bar 5 dangles.
    path = write_midi_file(
        tmp_path / "a.mid", [(0, False, eighths_on_quarters(10))], sigs=((0, 2, 4),)
    )
    parsed = midi_io.parse_midi(path)
    assert [(s.start, s.num_steps) for s in parsed.sections] == [(0, 32)]
    assert parsed.dropped == {}
    tokens = midi_io.song_tokens(parsed, MEL)
    assert tokens.tolist() == expected_melody(list(range(60, 68)), 32)

    # 3 bars of 2/4 then 2/4 -> 4/4: the odd third bar (quarters 4, 5) is dropped.
    path = write_midi_file(
        tmp_path / "b.mid",
        [(0, False, eighths_on_quarters(10))],
        sigs=((0, 2, 4), (6 * tpq, 4, 4)),
    )
    parsed = midi_io.parse_midi(path)
    assert [(s.start, s.num_steps) for s in parsed.sections] == [(0, 16), (16, 16)]
    tokens = midi_io.song_tokens(parsed, MEL)
    assert tokens.tolist() == expected_melody([60, 61, 62, 63, 66, 67, 68, 69], 32)


def test_four_two_bars_are_split_in_two(tmp_path):
    # 1.5 bars of 4/2 (12 quarters): 3 bars of 16 steps, the last one the half bar.
    path = write_midi_file(
        tmp_path / "a.mid", [(0, False, eighths_on_quarters(12))], sigs=((0, 4, 2),)
    )
    parsed = midi_io.parse_midi(path)
    assert [(s.start, s.num_steps) for s in parsed.sections] == [(0, 48)]
    tokens = midi_io.song_tokens(parsed, MEL)
    assert tokens.tolist() == expected_melody(list(range(60, 72)), 48)
    assert len(parsed.tracks[0].notes.onsets) == 12


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (
            (3, 4),
            off_grid("3/4", "12", "triple"),
        ),
        (
            (6, 8),
            off_grid("6/8", "12", "compound"),
        ),
        (
            (9, 8),
            off_grid("9/8", "18", "compound-triple"),
        ),
        (
            (3, 2),
            off_grid("3/2", "24", "3/2"),
        ),
        (
            (5, 32),
            "meter 5/32 (bar of 2.5 sixteenths, not on the duple grid; "
            "--meter magenta cuts 16-step bars)",
        ),
    ],
)
def test_meters_that_do_not_fit_16_step_bars_are_dropped(tmp_path, sig, reason):
    path = write_midi_file(tmp_path / "a.mid", [(0, False, scale_notes(2))], sigs=((0, *sig),))
    with pytest.raises(midi_io.MidiError, match=re.escape(f"no usable section ({reason})")):
        midi_io.parse_midi(path)


def test_zero_length_notes_last_one_step(tmp_path):
    path = write_midi_file(tmp_path / "z.mid", [(0, False, [(0, 0, 60), (480, 0, 64)])])
    parsed = midi_io.parse_midi(path)
    assert parsed.tracks[0].notes.ends.tolist() == [1, 5]
    assert midi_io.song_tokens(parsed, PR).tolist()[:6] == [36, 60, 60, 60, 40, 60]


def test_type0_many_channels(tmp_path):
    mf = mido.MidiFile(type=0, ticks_per_beat=96)
    track = mido.MidiTrack()
    mf.tracks.append(track)
    for ch, program in ((0, 33), (1, 0), (2, 40)):
        track.append(mido.Message("program_change", channel=ch, program=program, time=0))
    for _ in range(16):
        for ch, pitch in ((0, 40), (1, 64), (2, 72), (9, 36)):
            track.append(mido.Message("note_on", channel=ch, note=pitch, velocity=80, time=0))
        for k, (ch, pitch) in enumerate(((0, 40), (1, 64), (2, 72), (9, 36))):
            track.append(
                mido.Message(
                    "note_off", channel=ch, note=pitch, velocity=0, time=96 if k == 0 else 0
                )
            )
    buf = io.BytesIO()
    mf.save(file=buf)
    parsed = midi_io.parse_midi(buf.getvalue(), name="type0.mid")
    assert sorted(t.program for t in parsed.tracks) == [0, 33, 40]
    assert parsed.drum_onset_count == 16
    assert parsed.num_steps == 64  # no time signature: 4/4, 16 quarter notes
    assert midi_io.song_tokens(parsed, PR)[0] == 40 - 24  # busiest track; a tie keeps the first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, not midi at all", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff\xff\x00", "corrupt"),
    ],
)
def test_bad_bytes_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(midi_io.MidiError, match=message) as info:
        midi_io.parse_midi(path)
    assert str(path) in str(info.value)


def test_drum_only_absurd_tempo_truncated(tmp_path):
    drums = write_midi_file(tmp_path / "d.mid", [(0, True, scale_notes(4, base=36))])
    with pytest.raises(midi_io.MidiError, match="only drum notes"):
        midi_io.parse_midi(drums)
    fast = write_midi_file(tmp_path / "t.mid", [(0, False, scale_notes(4))], tempos=((0, 1e6),))
    with pytest.raises(midi_io.MidiError, match="tempo .* outside"):
        midi_io.parse_midi(fast)
    data = write_midi_file(tmp_path / "ok.mid", [(0, False, scale_notes(8))]).read_bytes()
    with pytest.raises(midi_io.MidiError, match="truncated.mid: corrupt or truncated"):
        midi_io.parse_midi(data[: len(data) // 2], name="truncated.mid")
    with pytest.raises(midi_io.MidiError, match="too long"):
        midi_io.parse_midi(data, max_bars=4)


def test_pianoroll_png(tmp_path):
    tokens = midi_io.song_tokens(midi_io.parse_midi(MUSIC21_MIDI / "test06.mid"), MEL)[:64]
    one = save_pianoroll(tokens, MEL, tmp_path / "one.png", title="test06")
    grid = save_pianoroll_grid(
        [tokens, tokens[::-1].copy(), np.zeros(64, np.uint8)], MEL, tmp_path / "grid.png"
    )
    for path in (one, grid):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="titles"):
        save_pianoroll_grid([tokens], MEL, tmp_path / "x.png", titles=["a", "b"])
