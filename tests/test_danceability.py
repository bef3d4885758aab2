"""Danceability sources: the CSV table, dance-type labels, the rhythm estimate, the spec parser."""

from __future__ import annotations

import numpy as np
import pytest

from jax_musicvae.data.danceability import (
    LABEL_DANCEABILITY,
    TableError,
    make_source,
)
from jax_musicvae.data.rhythm import estimate_danceability
from jax_musicvae.data.spotify import SpotifyDanceability
from jax_musicvae.data.types import SongInfo, SongRhythm


def test_table_by_path_and_by_artist_title(tmp_path):
    midi = tmp_path / "songs" / "Artist A" / "Song.mid"
    table = tmp_path / "table.csv"
    table.write_text(
        "path,artist,title,danceability\n"
        "songs/Artist A/Song.mid,,,0.8\n"  # relative to the table's folder
        ",  The  BEATLES ,Hey jude,0.25\n"
        "lmd/x.mid,,,1\n"  # a song id (path relative to the source root)
        "\n"
    )
    songs = [
        SongInfo("Artist A/Song.mid", str(midi)),
        SongInfo("Beatles/Hey.mid", "/elsewhere/h.mid", artist="the beatles", title="Hey Jude"),
        SongInfo("lmd/x.mid", "/data/lmd/x.mid"),
        SongInfo("none.mid", "/data/none.mid", artist="Nobody", title="Nothing"),
    ]
    values = make_source(f"table:{table}").values(songs, {})
    assert values == {
        "Artist A/Song.mid": 0.8,
        "Beatles/Hey.mid": 0.25,
        "lmd/x.mid": 1.0,
        "none.mid": None,
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,danceability\na.mid,high\n", r"table.csv:2: danceability 'high' is not a number"),
        ("path,danceability\na.mid,0.5\nb.mid,1.5\n", r"table.csv:3: danceability 1.5 is outside"),
        ("path,danceability\na.mid,0.5,extra\n", r"table.csv:2: 3 fields, the header has 2"),
        ("artist,title,danceability\n,,0.5\n", r"table.csv:2: row has neither"),
        ("file,value\na.mid,0.5\n", r"table.csv:1: header has no 'danceability'"),
        ("name,danceability\na,0.5\n", r"table.csv:1: header needs a 'path' column"),
        ("", r"table.csv: empty table"),
    ],
)
def test_table_errors_name_file_and_line(tmp_path, content, message):
    table = tmp_path / "table.csv"
    table.write_text(content)
    with pytest.raises(TableError, match=message):
        make_source(f"table:{table}")


def test_table_missing_file(tmp_path):
    with pytest.raises(TableError, match="nope.csv: cannot read"):
        make_source(f"table:{tmp_path / 'nope.csv'}")


def test_labels_scale():
    songs = [
        SongInfo("r", "r", label="reel"),
        SongInfo("j", "j", label="Slip  Jig"),
        SongInfo("a", "a", label="air"),
        SongInfo("c", "c", label="chorale"),
        SongInfo("u", "u", label="something else"),
        SongInfo("n", "n"),
    ]
    values = make_source("labels").values(songs, {})
    assert values == {"r": 0.95, "j": 0.9, "a": 0.15, "c": 0.05, "u": None, "n": None}
    dances = ["reel", "jig", "hornpipe", "polka", "strathspey", "slip jig", "waltz"]
    slow = ["air", "ballad", "lament", "lullaby", "hymn", "chorale", "song"]
    assert min(LABEL_DANCEABILITY[d] for d in dances) > max(LABEL_DANCEABILITY[s] for s in slow)


def test_rhythm_source_uses_the_estimator_and_none_without_rhythm():
    r = SongRhythm(np.arange(0, 64, 2, dtype=np.int32), 64, 120.0)
    songs = [SongInfo("a", "a"), SongInfo("b", "b")]
    values = make_source("rhythm").values(songs, {"a": r})
    assert values == {"a": pytest.approx(estimate_danceability(r)), "b": None}
    assert 0.7 < values["a"] < 1.0


def test_spotify_spec_takes_a_cache_path(tmp_path):
    src = make_source("spotify", cache_path=tmp_path / "s.json", max_retry_after_s=5)
    assert isinstance(src, SpotifyDanceability)
    assert src.cache_path == tmp_path / "s.json" and src.max_retry_after_s == 5


def test_unknown_spec_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown danceability source 'x'.*spotify, table:FILE"):
        make_source("x")
    with pytest.raises(ValueError, match="needs a file"):
        make_source("table:")
