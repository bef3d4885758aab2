"""The embedded music21 corpus: conversion to MIDI, labels, cache reuse."""

from __future__ import annotations

import pretty_midi
import pytest

from jax_musicvae.data import corpus
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
