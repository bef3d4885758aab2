"""Dataset build: real files, every bad-file category, resume, splits, CLI exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import MUSIC21_MIDI, make_songs, off_grid, run_cli, scale_notes, write_midi_file

from jax_musicvae.data.dataset import (
    BuildError,
    BuildSettings,
    build_dataset,
    discover,
    split_songs,
)
from jax_musicvae.data.source import SPLITS, load_manifest, load_songs

NO_DANCE = dict(danceability="none")


def read_split(out: Path, split: str) -> dict[str, np.ndarray]:
    return {n: np.load(out / split / f"{n}.npy") for n in ("tokens", "song", "condition")}


def test_build_music21_test_files(tmp_path):
    out = tmp_path / "ds"
    settings = BuildSettings(representation="melody90", num_bars=2, **NO_DANCE)
    result = build_dataset(
        str(MUSIC21_MIDI), out, settings, workers=2, cache_dir=tmp_path / "c", progress=False
    )
    m = load_manifest(out)
    assert m["counts"]["files"] == 21
    # test04 (2/4, bars paired into 16 steps) is usable; 3/4, 6/8, 3/8 are not.
    assert m["counts"]["parsed"] == 13 and m["counts"]["skipped"] == 8
    assert {s["reason"] for s in m["skipped"]} >= {
        "no usable section (" + off_grid("6/8", "12", "compound") + ")",
        "no usable section (" + off_grid("3/4", "12", "triple") + ")",
        "no usable section (" + off_grid("3/8", "6", "compound") + ")",
    }
    # test02's 1/4 pickup bar is left out of an otherwise usable file.
    assert m["dropped_sections"] == {
        "meter 1/4 (a pickup, or no clear bar length in the notes)": {"files": 1, "sections": 1}
    }
    splits = m["counts"]["splits"]
    assert [splits[s]["songs"] for s in SPLITS] == [11, 1, 1]
    assert sum(splits[s]["windows"] for s in SPLITS) == m["counts"]["windows"] == 736
    songs = load_songs(out)
    seen = set()
    for split in SPLITS:
        arrays = read_split(out, split)
        assert arrays["tokens"].dtype == np.uint8 and arrays["tokens"].shape[1] == 32
        assert arrays["tokens"].max() < 90
        ids = {songs[i]["song_id"] for i in np.unique(arrays["song"])}
        assert all(songs[i]["split"] == split for i in np.unique(arrays["song"]))
        assert not ids & seen  # no song in two splits
        seen |= ids
        assert np.isnan(arrays["condition"]).all()
        loaded = np.load(out / split / "tokens.npy", mmap_mode="r")
        assert isinstance(loaded, np.memmap)
    assert sum(s["windows"] for s in songs) == 736
    assert result.cached_files == 0


def test_same_seed_same_dataset_and_rerun_uses_cache(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 12)
    kw = dict(cache_dir=tmp_path / "c", progress=False)
    a = build_dataset(str(src), tmp_path / "a", BuildSettings(num_bars=2, **NO_DANCE), **kw)
    b = build_dataset(str(src), tmp_path / "b", BuildSettings(num_bars=2, **NO_DANCE), **kw)
    c = build_dataset(
        str(src), tmp_path / "c2", BuildSettings(num_bars=2, seed=5, **NO_DANCE), **kw
    )
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    assert a.manifest["content_hash"] != c.manifest["content_hash"]
    assert (tmp_path / "a/manifest.json").read_text() == (tmp_path / "b/manifest.json").read_text()
    assert a.cached_files == 0 and b.cached_files == 12
    # 6-bar songs give 5 two-bar windows each; 12 songs split 10/1/1.
    assert a.manifest["counts"]["windows"] == 60
    assert [a.manifest["counts"]["splits"][s]["songs"] for s in SPLITS] == [10, 1, 1]


def test_bad_files_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 3)
    good = (src / "song00.mid").read_bytes()
    (src / "empty.mid").write_bytes(b"")
    (src / "text.MIDI").write_text("this is not a MIDI file")
    (src / "truncated.mid").write_bytes(good[: len(good) // 2])
    (src / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06" + bytes(range(256)) * 4)
    write_midi_file(src / "drums.mid", [(0, True, scale_notes(4, base=36))])
    write_midi_file(src / "tempo.mid", [(0, False, scale_notes(4))], tempos=((0, 1e6),))
    huge = src / "huge.mid"
    write_midi_file(huge, [(0, False, scale_notes(3000))])
    (src / "notes.txt").write_text("ignored: not a .mid file")
    settings = BuildSettings(num_bars=2, max_file_bytes=40_000, **NO_DANCE)
    assert huge.stat().st_size > 40_000
    result = build_dataset(
        str(src), tmp_path / "out", settings, workers=2, cache_dir=tmp_path / "c", progress=False
    )
    reasons = {s["song_id"]: s["reason"] for s in result.manifest["skipped"]}
    assert sorted(reasons) == sorted(
        [
            "empty.mid",
            "text.MIDI",
            "truncated.mid",
            "corrupt.mid",
            "drums.mid",
            "tempo.mid",
            "huge.mid",
        ]
    )
    assert reasons["empty.mid"] == "empty file"
    assert reasons["text.MIDI"] == "not a MIDI file (no MThd header)"
    assert reasons["truncated.mid"].startswith("corrupt or truncated MIDI")
    assert reasons["corrupt.mid"].startswith("corrupt or truncated MIDI")
    assert reasons["drums.mid"] == "only drum notes"
    assert reasons["tempo.mid"].startswith("no usable section (tempo 1e+06 bpm outside")
    assert reasons["huge.mid"].startswith("file too large")
    assert result.manifest["counts"]["songs"] == 3


def test_cli_exit_codes_and_summary(tmp_path, capsys):
    src = tmp_path / "midi"
    make_songs(src, 4)
    (src / "bad.mid").write_bytes(b"junk")
    out = tmp_path / "out"
    argv = ["build", str(src), "--out", str(out), "--bars", "2", "--workers", "1"]
    argv += ["--danceability", "none", "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert run_cli("data", *argv) == 0
    text = capsys.readouterr().out
    assert "5 files, 4 usable, 1 skipped" in text and "not a MIDI file" in text
    assert run_cli("data", *argv) == 1  # exists without --overwrite
    assert run_cli("data", *[*argv, "--overwrite", "--representation", "melody90"]) == 0
    assert load_manifest(out)["representation"] == "melody90"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mid").write_bytes(b"")
    assert (
        run_cli(
            "data", *["build", str(bad), "--out", str(tmp_path / "o2"), "--danceability", "none"]
        )
        == 1
    )
    assert not (tmp_path / "o2").exists()


def test_interrupt_leaves_nothing_and_rerun_resumes(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 6)
    out = tmp_path / "out"
    settings = BuildSettings(num_bars=2, **NO_DANCE)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(
            str(src),
            out,
            settings,
            cache_dir=tmp_path / "c",
            progress=False,
            on_files_done=interrupt,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "midi"]
    result = build_dataset(str(src), out, settings, cache_dir=tmp_path / "c", progress=False)
    assert result.cached_files == 6
    fresh = build_dataset(
        str(src), tmp_path / "fresh", settings, cache_dir=tmp_path / "c2", progress=False
    )
    assert fresh.cached_files == 0
    assert fresh.manifest["content_hash"] == result.manifest["content_hash"]


def test_lakh_layouts(tmp_path):
    clean = tmp_path / "clean_midi"
    (clean / "ABBA").mkdir(parents=True)
    write_midi_file(clean / "ABBA" / "Waterloo.1.mid", [(0, False, scale_notes(2))])
    songs = discover(str(clean))
    assert (songs[0].song_id, songs[0].artist, songs[0].title) == (
        "ABBA/Waterloo.1.mid",
        "ABBA",
        "Waterloo",
    )
    matched = tmp_path / "lmd_matched" / "A" / "B" / "C" / "TRABCDE123456789AB"
    matched.mkdir(parents=True)
    write_midi_file(matched / "0123abcd.mid", [(0, False, scale_notes(2))])
    (song,) = discover(str(tmp_path / "lmd_matched"))
    assert song.msd_id == "TRABCDE123456789AB" and song.artist is None
    (single,) = discover(str(matched / "0123abcd.mid"))
    assert single.msd_id == "TRABCDE123456789AB"
    with pytest.raises(BuildError, match="no such file"):
        discover(str(tmp_path / "missing"))


class HalfKnown:
    """A danceability source that knows only even-numbered songs."""

    def values(self, songs, rhythms):
        assert set(rhythms) == {s.song_id for s in songs}
        return {s.song_id: (0.25 if int(s.song_id[4:6]) % 2 == 0 else None) for s in songs}


def test_missing_danceability_drop_or_fill(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 6)
    kw = dict(cache_dir=tmp_path / "c", progress=False, danceability_source=HalfKnown())
    dropped = build_dataset(str(src), tmp_path / "d", BuildSettings(num_bars=2), **kw)
    counts = dropped.manifest["counts"]
    assert (counts["songs"], counts["danceability_missing"], counts["danceability_dropped"]) == (
        3,
        3,
        3,
    )
    filled = build_dataset(
        str(src), tmp_path / "f", BuildSettings(num_bars=2, missing="fill:0.5"), **kw
    )
    assert filled.manifest["counts"]["danceability_filled"] == 3
    conds = np.concatenate([read_split(tmp_path / "f", s)["condition"] for s in SPLITS])
    assert sorted(set(conds.tolist())) == [0.25, 0.5]
    assert {r["danceability"] for r in load_songs(tmp_path / "f")} == {0.25, 0.5}


def test_rhythm_danceability_from_the_other_module(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 3)
    result = build_dataset(
        str(src),
        tmp_path / "o",
        BuildSettings(num_bars=2, danceability="rhythm"),
        cache_dir=tmp_path / "c",
        progress=False,
    )
    values = [r["danceability"] for r in load_songs(tmp_path / "o")]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert result.manifest["settings"]["danceability"] == "rhythm"


def test_cap_and_transposition_only_in_train(tmp_path):
    src = tmp_path / "midi"
    make_songs(src, 10, bars=8)  # 7 two-bar windows per song
    settings = BuildSettings(
        num_bars=2, max_windows_per_song=4, transpose=(-2, -1, 1, 2), **NO_DANCE
    )
    result = build_dataset(
        str(src), tmp_path / "o", settings, cache_dir=tmp_path / "c", progress=False
    )
    splits = result.manifest["counts"]["splits"]
    assert splits["train"]["windows"] == splits["train"]["songs"] * 4 * 5
    assert splits["validation"]["windows"] == 4 and splits["test"]["windows"] == 4
    shifts = np.load(tmp_path / "o/train/transpose.npy")
    assert np.bincount(shifts + 2).tolist() == [32, 32, 32, 32, 32]


def test_split_songs_is_by_seeded_hash():
    ids = [f"s{i}" for i in range(100)]
    names = split_songs(ids, (0.8, 0.1, 0.1), seed=0)
    assert [names.count(s) for s in SPLITS] == [80, 10, 10]
    assert names == split_songs(ids, (0.8, 0.1, 0.1), seed=0)
    assert names != split_songs(ids, (0.8, 0.1, 0.1), seed=1)
    # Adding songs leaves most existing assignments in place.
    more = split_songs([*ids, *(f"t{i}" for i in range(10))], (0.8, 0.1, 0.1), seed=0)
    assert sum(a == b for a, b in zip(names, more, strict=False)) >= 85
    assert split_songs(["a", "b"], (0.8, 0.1, 0.1), 0) == ["train", "train"]
