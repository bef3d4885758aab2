"""The dance-vs-air classifier: features, fit, and its place in the control measures."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_midi_file

from jax_musicvae.control import control_measures
from jax_musicvae.data.dance_classifier import (
    DanceClassifier,
    fit_dance_classifier,
    labelled_windows,
    window_features,
)
from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.data.melody_stats import ValidityBounds
from jax_musicvae.data.meters import DEFAULT_GRID
from jax_musicvae.data.representations import Melody90, Notes
from jax_musicvae.data.types import SongInfo
from jax_musicvae.statistics import roc_auc

MEL = Melody90()


def test_roc_auc_counts_ordered_pairs_and_half_the_ties():
    # Pairs (positive, negative): 3 > 1, 3 > 2, 2 > 1, 2 = 2 (half), out of 4.
    assert roc_auc([3.0, 2.0], [1.0, 2.0]) == pytest.approx(3.5 / 4)
    assert roc_auc([1.0], [2.0]) == 0.0
    assert np.isnan(roc_auc([], [1.0]))


def _window(every: int, rng: np.random.Generator, bars: int = 2) -> np.ndarray:
    """A window with a note starting every `every` steps at random pitches."""
    steps = bars * 16
    onsets = np.arange(0, steps, every)
    pitches = rng.integers(60, 72, len(onsets))
    return MEL.encode(Notes(onsets, onsets + every, pitches), steps)


def test_features_count_onsets_per_bar_position_sounding_share_and_note_length():
    rng = np.random.default_rng(0)
    features = window_features(np.stack([_window(4, rng), _window(8, rng)]), MEL)
    assert features.shape == (2, 18)
    np.testing.assert_array_equal(features[0, :16], [1, 0, 0, 0] * 4)
    np.testing.assert_array_equal(features[1, :16], [1, 0, 0, 0, 0, 0, 0, 0] * 2)
    np.testing.assert_allclose(features[:, 16], [1.0, 1.0])
    np.testing.assert_allclose(features[:, 17], np.log([4.0, 8.0]))


def test_the_classifier_separates_busy_from_slow_windows_and_needs_both_classes():
    rng = np.random.default_rng(1)
    busy = [_window(int(rng.choice([1, 2])), rng) for _ in range(40)]
    slow = [_window(int(rng.choice([8, 16])), rng) for _ in range(40)]
    tokens = np.stack(busy + slow)
    labels = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    classifier = DanceClassifier.fit(window_features(tokens, MEL), labels, DEFAULT_GRID, "melody90")
    p = classifier.probability(tokens)
    assert p[:40].min() > 0.8 and p[40:].max() < 0.2
    middle = classifier.probability(np.stack([_window(4, rng)]))[0]
    assert p[40:].max() < middle < p[:40].min()
    with pytest.raises(ValueError, match="both dance and air"):
        DanceClassifier.fit(window_features(tokens, MEL), np.ones(80, bool), DEFAULT_GRID, "x")


def test_control_measures_report_rho_against_the_classifier():
    rng = np.random.default_rng(2)
    busy = [_window(2, rng) for _ in range(20)]
    slow = [_window(8, rng) for _ in range(20)]
    tokens = np.stack(busy + slow)
    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    classifier = DanceClassifier.fit(window_features(tokens, MEL), labels, DEFAULT_GRID, "melody90")
    # Three requests answered by ever busier melodies: the classifier agrees in direction.
    outputs = np.stack([[_window(every, rng) for _ in range(6)] for every in (8, 4, 2)])
    bounds = ValidityBounds.fit(tokens, MEL)
    measured = control_measures([0.2, 0.5, 0.8], outputs, MEL, bounds, classifier=classifier)
    assert measured["classifier_rho"] > 0.8
    reversed_ = control_measures([0.8, 0.5, 0.2], outputs, MEL, bounds, classifier=classifier)
    assert reversed_["classifier_rho"] < -0.8
    assert control_measures([0.2, 0.5, 0.8], outputs, MEL, bounds)["classifier_rho"] is None


def _labelled_dataset(root, labels: list[str | None]):
    songs = []
    (root / "midi").mkdir(parents=True)
    for i, label in enumerate(labels):
        step = 240 if label == "reel" else 1920  # eighth notes or whole notes
        notes = [(t, step, 60 + (t // step) % 7) for t in range(0, 8 * 1920, step)]
        path = write_midi_file(root / "midi" / f"song{i:02d}.mid", [(0, False, notes)])
        songs.append(SongInfo(song_id=f"song{i:02d}", path=str(path), label=label))
    out = root / "ds"
    build_dataset(
        "labelled",
        out,
        BuildSettings(num_bars=2, split=(0.5, 0.5, 0.0), representation="melody90", seed=3),
        cache_dir=root / "cache",
        progress=False,
        songs=songs,
        danceability_source=None,
    )
    return out


def test_fit_on_a_labelled_dataset_and_none_without_labels(tmp_path):
    data = _labelled_dataset(tmp_path / "a", ["reel", "air"] * 6)
    tokens, is_dance = labelled_windows(data, "train")
    assert len(tokens) > 0 and is_dance.any() and not is_dance.all()
    fitted = fit_dance_classifier(data)
    assert fitted is not None
    assert fitted.training_windows == len(tokens)
    held, held_dance = labelled_windows(data, "validation")
    assert fitted.validation_windows == len(held)
    assert held_dance.any() and not held_dance.all()  # seed 3 puts both kinds in validation
    assert fitted.validation_auc == pytest.approx(1.0)
    unlabelled = _labelled_dataset(tmp_path / "b", [None] * 4)
    assert fit_dance_classifier(unlabelled) is None
