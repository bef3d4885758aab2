"""Bar grids: each meter family, pickups, meter changes, regrouping, the magenta cut, and a
compound-time model end to end (built, trained, sampled, written as 6/8)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import symusic
from helpers import tiny_config, write_midi_file

from jax_musicvae.config import ConfigError
from jax_musicvae.data import midi_io
from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.data.meters import GRIDS, parse_meter, regroup
from jax_musicvae.data.representations import Melody90
from jax_musicvae.data.rhythm import rhythm_features
from jax_musicvae.data.source import WindowSource, load_manifest
from jax_musicvae.data.types import SongRhythm
from jax_musicvae.generate import TrainedModel
from jax_musicvae.train import check_dataset, train

TPQ = 480
STEP = TPQ // 4  # ticks of one 16th-note step
MEL = Melody90()


def pattern(bars: int, bar_steps: int, rhythm: list[tuple[int, int]], start: int = 0) -> list:
    """Notes repeating `rhythm` ([(onset step, length in steps)] within a bar) for `bars`
    bars, from step `start`; pitches walk up so bars differ."""
    notes = []
    for bar in range(bars):
        for k, (onset, length) in enumerate(rhythm):
            tick = (start + bar * bar_steps + onset) * STEP
            notes.append((tick, length * STEP, 60 + (bar * len(rhythm) + k) % 12))
    return notes


WALTZ = [(0, 8), (8, 4)]  # half, quarter: 3/4
JIG = [(0, 4), (4, 2), (6, 4), (10, 2)]  # quarter-eighth twice: 6/8
SLIP_JIG = [(0, 4), (4, 2), (6, 4), (10, 2), (12, 4), (16, 2)]  # 9/8
MARCH = [(0, 6), (6, 2), (8, 4), (12, 4)]  # dotted quarter, eighth, quarter, quarter: 4/4


def file_in(tmp_path, name: str, sig: tuple[int, int], bar_steps: int, rhythm, bars: int = 8):
    return write_midi_file(
        tmp_path / name, [(0, False, pattern(bars, bar_steps, rhythm))], sigs=((0, *sig),)
    )


# --------------------------------------------------------------- meter families


@pytest.mark.parametrize(
    ("grid", "sig", "bar_steps", "rhythm", "grid_bars"),
    [
        ("triple", (3, 4), 12, WALTZ, 8),
        ("compound", (6, 8), 12, JIG, 8),
        ("compound", (3, 8), 6, JIG[:2], 4),  # two 3/8 bars make one 6/8 bar
        ("compound", (12, 8), 24, JIG + [(o + 12, d) for o, d in JIG], 16),  # split in two
        ("compound-triple", (9, 8), 18, SLIP_JIG, 8),
        ("duple", (2, 4), 8, [(0, 4), (4, 4)], 4),
    ],
)
def test_each_meter_family_keeps_its_bars(tmp_path, grid, sig, bar_steps, rhythm, grid_bars):
    path = file_in(tmp_path, "tune.mid", sig, bar_steps, rhythm)
    parsed = midi_io.parse_midi(path, grid=GRIDS[grid])
    bar = GRIDS[grid].steps_per_bar
    assert [s.num_steps for s in parsed.sections] == [grid_bars * bar]
    assert parsed.meters == {f"{sig[0]}/{sig[1]}": grid_bars * bar}
    assert parsed.dropped == {}
    # Every bar of the grid starts with the pattern's first (downbeat) note.
    onsets = parsed.tracks[0].notes.onsets
    assert set(range(0, grid_bars * bar, bar)) <= set(onsets.tolist())


@pytest.mark.parametrize(
    ("sig", "grid", "hint"),
    [
        ((3, 4), "duple", "--meter triple keeps it"),
        ((6, 8), "triple", "--meter compound keeps it"),
        ((4, 4), "compound", "--meter duple keeps it"),
        ((9, 8), "duple", "--meter compound-triple keeps it"),
        ((5, 4), "duple", "--meter 5/4 keeps it"),
        ((5, 32), "duple", "--meter magenta cuts 16-step bars"),
    ],
)
def test_a_meter_off_the_grid_is_dropped_with_a_hint(tmp_path, sig, grid, hint):
    path = file_in(tmp_path, "a.mid", sig, 12, WALTZ)
    with pytest.raises(midi_io.MidiError, match=re.escape(hint)):
        midi_io.parse_midi(path, grid=GRIDS[grid])


def test_a_pickup_bar_is_dropped_and_the_grid_starts_after_it(tmp_path):
    pickup = [(0, 2 * STEP, 67), (2 * STEP, 2 * STEP, 69)]  # one quarter, as its own 1/4 bar
    notes = pickup + pattern(6, 12, WALTZ, start=4)
    path = write_midi_file(tmp_path / "w.mid", [(0, False, notes)], sigs=((0, 1, 4), (TPQ, 3, 4)))
    parsed = midi_io.parse_midi(path, grid=GRIDS["triple"])
    assert [s.num_steps for s in parsed.sections] == [72]
    assert parsed.dropped == {"meter 1/4 (a pickup, or no clear bar length in the notes)": 1}
    assert parsed.tracks[0].notes.onsets[:3].tolist() == [0, 8, 12]  # downbeat of bar 1


def test_meter_changes_mid_tune_keep_the_sections_on_the_grid(tmp_path):
    jig = pattern(4, 12, JIG)
    waltz = pattern(2, 12, WALTZ, start=48)
    jig_again = pattern(4, 12, JIG, start=72)
    sigs = ((0, 6, 8), (48 * STEP, 3, 4), (72 * STEP, 6, 8))
    path = write_midi_file(tmp_path / "m.mid", [(0, False, jig + waltz + jig_again)], sigs=sigs)
    parsed = midi_io.parse_midi(path, grid=GRIDS["compound"])
    assert [(s.start, s.num_steps, s.meter) for s in parsed.sections] == [
        (0, 48, "6/8"),
        (48, 48, "6/8"),
    ]
    assert list(parsed.dropped) == [
        "meter 3/4 (bar of 12 sixteenths, not on the compound grid; --meter triple keeps it)"
    ]
    triple = midi_io.parse_midi(path, grid=GRIDS["triple"])
    assert [s.num_steps for s in triple.sections] == [24]


# ------------------------------------------------------------------ regrouping


def test_regroup_finds_the_bar_length_and_the_first_bar_line():
    waltz = np.array(pattern(8, 12, WALTZ, start=4))
    found = regroup(waltz[:, 0] // STEP, waltz[:, 1] // STEP, 4 + 96)
    assert found == (12, 4)
    march = np.array(pattern(8, 16, MARCH))
    assert regroup(march[:, 0] // STEP, march[:, 1] // STEP, 128) == (16, 0)
    even = np.arange(0, 128, 2)  # running eighths: no bar length shows
    assert regroup(even, np.full(len(even), 2), 128) is None
    assert regroup(march[:3, 0] // STEP, march[:3, 1] // STEP, 16) is None  # a pickup


@pytest.mark.parametrize("artefact", [(1, 4), (1, 8), (4, 1)])
def test_artefact_meters_are_regrouped_where_the_notes_show_the_bar(tmp_path, artefact):
    path = file_in(tmp_path, "waltz.mid", artefact, 12, WALTZ, bars=8)
    parsed = midi_io.parse_midi(path, grid=GRIDS["triple"])
    label = f"{artefact[0]}/{artefact[1]} regrouped"
    assert [(s.num_steps, s.meter) for s in parsed.sections] == [(96, label)]
    with pytest.raises(midi_io.MidiError, match="regrouped into bars of 12 steps, not the duple"):
        midi_io.parse_midi(path, grid=GRIDS["duple"])
    march = file_in(tmp_path, "march.mid", artefact, 16, MARCH, bars=8)
    assert midi_io.parse_midi(march).sections[0].num_steps == 128


def test_the_magenta_grid_ignores_the_declared_meter(tmp_path):
    path = file_in(tmp_path, "w.mid", (3, 4), 12, WALTZ, bars=8)  # 96 steps
    parsed = midi_io.parse_midi(path, grid=GRIDS["magenta"])
    assert [(s.num_steps, s.meter) for s in parsed.sections] == [(96, "3/4")]
    assert parsed.grid.time_signature == (4, 4)


def test_meter_selection():
    assert parse_meter("compound").steps_per_bar == 12
    assert list(parse_meter("6/8,12/8").meters) == [(6, 8), (12, 8)]
    with pytest.raises(ValueError, match="do not share one grid"):
        parse_meter("3/4,6/8")
    with pytest.raises(ValueError, match="give one of duple"):
        parse_meter("waltz")
    with pytest.raises(ValueError, match="not on the compound grid"):
        GRIDS["compound"].select(((3, 4),))


# ------------------------------------------------------------------ the rhythm


def test_rhythm_features_follow_the_grid():
    # Onsets on every dotted quarter of 8 bars of 6/8: every compound beat is sounded.
    onsets = np.arange(0, 96, 6)
    compound = rhythm_features(SongRhythm(onsets, 96, 120.0, grid="compound"))
    duple = rhythm_features(SongRhythm(onsets, 96, 120.0, grid="duple"))
    assert compound["beat_coverage"] == pytest.approx(1.0)
    assert duple["beat_coverage"] == pytest.approx(1 / 3)  # every third 4-step beat
    assert compound["metrical"] == pytest.approx(0.75)  # downbeats 1, second beats 0.5
    # A dotted-quarter beat at 120 quarters per minute is 80 beats per minute.
    assert compound["tempo"] == pytest.approx(np.exp(-(np.log2(80 / 120) ** 2) / 0.5))
    assert duple["tempo"] == pytest.approx(1.0)


# ------------------------------------------------------------- a 6/8 model


@pytest.fixture(scope="module")
def jig_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("jigs")
    (root / "midi").mkdir()
    for i in range(10):
        rhythm = JIG if i % 2 else [(0, 6), (6, 6)]  # jigs, and dotted quarters
        notes = pattern(6, 12, rhythm, start=0)
        notes = [(t, d, p + i) for t, d, p in notes]
        write_midi_file(root / "midi" / f"jig{i:02d}.mid", [(0, False, notes)], sigs=((0, 6, 8),))
    write_midi_file(root / "midi" / "reel.mid", [(0, False, pattern(6, 16, MARCH))])
    settings = BuildSettings(
        representation="melody90", num_bars=2, split=(0.6, 0.2, 0.2), meter="compound"
    )
    build_dataset(
        str(root / "midi"),
        root / "ds",
        settings,
        cache_dir=root / "cache",
        progress=False,
        danceability_source=_ByName(),
    )
    return root / "ds"


class _ByName:
    def values(self, songs, rhythms):
        return {s.song_id: 0.3 + 0.05 * i for i, s in enumerate(songs)}


def test_a_compound_dataset_records_its_grid_and_meters(jig_dataset):
    manifest = load_manifest(jig_dataset)
    assert (manifest["grid"], manifest["steps_per_bar"], manifest["steps_per_beat"]) == (
        "compound",
        12,
        6,
    )
    assert manifest["time_signature"] == [6, 8] and manifest["sequence_length"] == 24
    assert manifest["counts"]["meters"]["6/8"]["songs"] == 10
    assert manifest["counts"]["skipped"] == 1  # the 4/4 reel
    source = WindowSource(jig_dataset, "train")
    assert source.tokens.shape[1] == 24
    assert np.all(source.window_danceability > 0)


def test_a_6_8_model_trains_and_writes_6_8_midi(jig_dataset, tmp_path):
    config = tiny_config(num_steps=2, eval_every=2, num_reconstructions=1)
    with pytest.raises(ConfigError, match="train with --set model.steps_per_bar=12"):
        check_dataset(jig_dataset, config)
    config = config.override(["model.steps_per_bar=12"])
    train(config, jig_dataset, tmp_path / "run")
    model = TrainedModel.load(tmp_path / "run")
    assert model.grid.name == "compound"
    tokens = model.sample(1, danceability=0.5, temperature=1.0, seed=0)[0]
    assert len(tokens) == 24
    path = model.write_midi(tokens, tmp_path / "jig.mid")
    score = symusic.Score(str(path))
    assert [(t.numerator, t.denominator) for t in score.time_signatures] == [(6, 8)]
    # Reading it back on the model's grid gives the same melody.
    melody = model.melody(path)
    assert len(melody.tokens) % 12 == 0


def test_a_meter_without_a_named_grid_gets_its_own(tmp_path):
    hornpipe = [(0, 8), (8, 8), (16, 8)]  # three half notes: 3/2
    path = file_in(tmp_path, "h.mid", (3, 2), 24, hornpipe, bars=4)
    grid = parse_meter("3/2")
    assert (grid.steps_per_bar, grid.steps_per_beat, grid.time_signature) == (24, 8, (3, 2))
    parsed = midi_io.parse_midi(path, grid=grid)
    assert [s.num_steps for s in parsed.sections] == [96]
    features = rhythm_features(parsed.rhythm())
    assert features["beat_coverage"] == pytest.approx(1.0)  # every half-note beat sounded
    assert parse_meter("6/4").steps_per_beat == 12  # compound: dotted halves
    with pytest.raises(ValueError, match="not a whole number"):
        parse_meter("5/32")
