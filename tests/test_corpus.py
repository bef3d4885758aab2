"""The embedded music21 corpus: conversion to MIDI, labels, cache reuse."""

from __future__ import annotations

import pretty_midi
import pytest

from jax_musicvae.data import corpus, midi_io
from jax_musicvae.data.corpus import CORPUS_NAMES, materialize, normalize_label


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("reel", "reel"),
        ("Double Jig", "jig"),
        ("slipjig", "slip jig"),
        ("Highland Fling", "fling"),
        ("Romanze, Ballade, Lied", "ballad"),
        ("ballade, adelige als dienstmagd, tod; kinder - spiel, tanz", "dance"),
        ("tanzlied]", "dance"),
        ("Liebes - Lied", "song"),
        ("kinder -, wiegen - lied", "lullaby"),
        ("Geistliches, religiöses Lied]", "hymn"),
        ("Quick Step. 25th Regt.", "quickstep"),
        ("The Ranting Highlandman.", None),  # "Ranting" is not the dance "rant"
        ("???]", None),
        ("", None),
    ],
)
def test_normalize_label(text, label):
    assert normalize_label(text) == label


def test_unknown_corpus_lists_names(tmp_path):
    assert {"folk", "bach", "folk+bach", "folk-small"} <= set(CORPUS_NAMES)
    with pytest.raises(ValueError, match=r"unknown corpus 'rock'.*folk, folk-small"):
        materialize("rock", tmp_path)


def test_materialize_converts_once_and_reuses_the_cache(tmp_path, monkeypatch):
    songs = materialize("folk-small", tmp_path, workers=2, limit=6)
    assert [s.song_id for s in songs] == [f"airdsAirs/book1/{k:04d}" for k in range(6)]
    assert songs[0].title == "The Ranting Highlandman."
    assert songs[1].title == "Quick Step. 25th Regt." and songs[1].label == "quickstep"
    assert all(s.collection == "airdsAirs" for s in songs)

    # Tune 1: "The Ranting Highlandman", M:C| Q:1/2=112, a one-quarter pickup ("AG|").
    pm = pretty_midi.PrettyMIDI(songs[0].path)
    assert pm.get_tempo_changes()[1][0] == pytest.approx(224.0, abs=0.01)
    ts = pm.time_signature_changes[0]
    assert (ts.numerator, ts.denominator, ts.time) == (2, 2, 0.0)
    notes = pm.instruments[0].notes
    # The pickup is padded to a whole bar: the first note starts 3 quarters in.
    assert notes[0].start == pytest.approx(3 * 60 / 224, abs=1e-3)
    assert [n.pitch for n in notes[:3]] == [69, 67, 71]  # A G B
    assert len(notes) > 50

    # Rerun: nothing is converted again (the converter would fail if called).
    def boom(batch):
        raise AssertionError("converted again")

    monkeypatch.setattr(corpus, "_convert_batch", boom)
    mtime = [pretty_midi.PrettyMIDI(s.path).instruments[0].notes[0].start for s in songs]
    again = materialize("folk-small", tmp_path, workers=1, limit=6)
    assert again == songs
    assert [pretty_midi.PrettyMIDI(s.path).instruments[0].notes[0].start for s in again] == mtime


def test_bach_soprano_lines(tmp_path):
    songs = materialize("bach", tmp_path, workers=1, limit=2)
    assert [s.label for s in songs] == ["chorale", "chorale"]
    assert all(s.song_id.startswith("bach/bwv") and s.artist == "J. S. Bach" for s in songs)
    for song in songs:
        pm = pretty_midi.PrettyMIDI(song.path)
        assert len(pm.instruments) == 1  # the soprano only
        pitches = [n.pitch for n in pm.instruments[0].notes]
        assert 20 < len(pitches) < 200 and min(pitches) >= 55 and max(pitches) <= 84


def test_a_tune_that_fails_is_cached_as_an_error(tmp_path, monkeypatch):
    real = corpus._tunes_for

    def broken(name, root):
        tunes = real(name, root)
        bad = corpus._Tune(tunes[0].info, "abc", "X:1\nT:bad\nK:C\n")  # no notes
        return [bad, *tunes[1:]]

    monkeypatch.setattr(corpus, "_tunes_for", broken)
    songs = materialize("folk-small", tmp_path, workers=1, limit=2)
    assert [s.song_id for s in songs] == ["airdsAirs/book1/0001"]
    err = next(tmp_path.rglob("0000.err"))
    assert "no notes" in err.read_text()


REPEATED_TUNE = """X:1
T:Repeats
M:2/4
L:1/8
K:C
|:CDEF|1 GABc:|2 cBAG||
|:cdef|gabc':|
"""


def test_repeats_are_expanded_and_2_4_bars_paired(tmp_path, monkeypatch):
    real = corpus._tunes_for

    def with_repeats(name, root):
        tunes = real(name, root)
        return [corpus._Tune(tunes[0].info, "abc", REPEATED_TUNE)]

    monkeypatch.setattr(corpus, "_tunes_for", with_repeats)
    (song,) = materialize("folk-small", tmp_path, workers=1, limit=1)
    notes = pretty_midi.PrettyMIDI(song.path).instruments[0].notes
    # Written: 5 bars (20 eighths). Played: A, 1st ending, A, 2nd ending, B, B = 8 bars.
    c, d, e, f, g, a, b = 60, 62, 64, 65, 67, 69, 71
    part_a, part_b = [c, d, e, f], [72, 74, 76, 77, 79, 81, 83, 84]
    played = [*part_a, g, a, b, 72, *part_a, 72, b, a, g, *part_b, *part_b]
    assert [n.pitch for n in notes] == played
    assert notes[-1].end == pytest.approx(32 * 0.25)  # 32 eighths at 120 bpm

    # 8 bars of 2/4 make 4 bars of 16 steps, one eighth note every 2 steps.
    parsed = midi_io.parse_midi(song.path)
    assert [(s.start, s.num_steps) for s in parsed.sections] == [(0, 64)]
    assert parsed.busiest_track().notes.onsets.tolist() == list(range(0, 64, 2))


def test_play_order_keeps_a_tune_without_repeats_as_written():
    part = corpus._melody_part(
        corpus._parse(corpus._Tune(None, "abc", "X:1\nM:4/4\nL:1/4\nK:C\nCDEF|GABc|\n"))
    )
    written = list(part.getElementsByClass("Measure"))
    assert len(written) == 2 and corpus._play_order(part, "t") == written


def test_a_2_4_pickup_is_padded_so_bar_1_starts_a_pair():
    tune = corpus._Tune(None, "abc", "X:1\nM:2/4\nL:1/8\nK:C\nG|CDEF|GABc|cBAG|FEDC|\n")
    part = corpus._melody_part(corpus._parse(tune))
    parsed = midi_io.parse_midi(corpus._melody_to_midi_bytes(corpus._play_order(part, "t")))
    # Rest bar + pickup bar, then bars 1+2 and 3+4: the pickup G is the last eighth
    # of the first 16-step bar and bar 1 starts the second.
    assert [(s.start, s.num_steps) for s in parsed.sections] == [(0, 48)]
    notes = parsed.busiest_track().notes
    assert notes.onsets.tolist() == [14, *range(16, 48, 2)]
    assert notes.pitches.tolist()[:3] == [67, 60, 62]
