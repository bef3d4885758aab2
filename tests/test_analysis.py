"""Analysis: Spearman, rhythm of tokens, PCA, and `musicvae analyze` on a tiny dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import make_checkpoint, random_params, run_cli, tiny_model_experiment
from scipy.stats import spearmanr

from jax_musicvae.analysis import AnalysisSettings, control_values, markdown_table, pca_2d
from jax_musicvae.attributes import ATTRIBUTE_FILE, compute_attribute_vector
from jax_musicvae.code_probe import code_without, probe_rho
from jax_musicvae.config import ConfigError
from jax_musicvae.data.representations import Melody90, PianoRoll61
from jax_musicvae.data.rhythm import melody_rhythm
from jax_musicvae.data.source import WindowSource
from jax_musicvae.generate import TrainedModel
from jax_musicvae.statistics import spearman


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    requested = np.repeat(np.round(np.arange(0.1, 1.0, 0.1), 1), 7)
    estimated = np.round(requested + rng.normal(0, 0.3, len(requested)), 1)  # many ties
    expected = spearmanr(requested, estimated).statistic
    assert spearman(requested, estimated) == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 3, 1]) == pytest.approx(-0.9486832980505138)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


@pytest.mark.parametrize("field", ["max_windows", "samples_per_value", "edit_windows"])
def test_settings_refuse_non_positive_counts(field):
    with pytest.raises(ConfigError, match=f"{field}=0 must be a positive integer"):
        AnalysisSettings(**{field: 0})


def test_table_tells_impossible_from_constant():
    row = dict(
        model="m",
        conditioning="none",
        windows=3,
        elbo=-1.0,
        kl_bits=2.0,
        accuracy=0.5,
        sampled_accuracy=0.25,
        greedy_accuracy=0.375,
        shuffled_accuracy=0.125,
        baseline_accuracy=0.0625,
        prior_valid=0.9,
        prior_valid_refined=0.875,
        real_valid=0.95,
        interpolation_smoothness=None,
        control_generated=0.5,
        control_edited=None,
        edit_keeps=None,
        code_probe_rho=0.25,
        curves={"generated": [0.1, 0.2], "edited": None, "keeps": None},
    )
    constant = {
        **row,
        "control_generated": None,
        "edit_keeps": 0.75,
        "curves": {"generated": [0.3, 0.3], "edited": [0.2, 0.2], "keeps": [0.75, 0.75]},
    }
    lines = markdown_table([row, constant]).splitlines()
    assert lines[2] == (
        "| m | none | 3 | -1.00 | 2.00 | 0.500 | 0.250 | 0.500 | n/a | n/a | 0.250 |"
    )
    assert lines[3].endswith("| 0.250 | const. | const. | 0.750 | 0.250 |")
    assert lines[7] == "| m | 0.062 | 0.500 | 0.375 | 0.125 | 2.0 | 0.900 | 0.875 | 0.950 | n/a |"


def test_the_code_probe_finds_nonlinear_dependence_and_nothing_else():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 6))
    test = rng.normal(size=(500, 6))
    # The target depends on dimension 2 through |x|: no linear correlation at all.
    rho = probe_rho(x, np.abs(x[:, 2]), test, np.abs(test[:, 2]))
    unrelated = probe_rho(x, rng.normal(size=3000), test, rng.normal(size=500))
    assert abs(spearman(test[:, 2], np.abs(test[:, 2]))) < 0.1
    assert rho > 0.9 and abs(unrelated) < 0.15
    assert probe_rho(x, np.abs(x[:, 2]), test, np.abs(test[:, 2])) == rho  # deterministic
    # The regularised dimension is what the probe must not see.
    assert code_without(x, 2).shape == (3000, 5) and code_without(x, None) is x
    hidden = probe_rho(
        code_without(x, 2), np.abs(x[:, 2]), code_without(test, 2), np.abs(test[:, 2])
    )
    assert abs(hidden) < 0.15


def test_token_onsets_for_both_representations():
    melody = np.array([0, 40, 0, 1, 41, 0, 0, 42, 1, 0, 0, 0, 43, 0, 0, 0])
    rhythm = melody_rhythm(melody, Melody90(), tempo_bpm=100)
    np.testing.assert_array_equal(rhythm.onset_steps, [1, 4, 7, 12])
    assert rhythm.num_steps == 16 and rhythm.tempo_bpm == 100 and rhythm.drum_onset_count == 0
    roll = np.array([60, 60, 5, 5, 7, 60, 7, 7, 7, 9, 9, 60, 60, 60, 60, 60])
    np.testing.assert_array_equal(melody_rhythm(roll, PianoRoll61()).onset_steps, [2, 4, 6, 9])


def test_default_requests_are_the_deciles_of_the_training_windows(generation_dataset):
    estimates = WindowSource(generation_dataset, "train").window_danceability
    expected = np.quantile(estimates, np.linspace(0.1, 0.9, 9))
    values = control_values(generation_dataset, AnalysisSettings())
    assert values == pytest.approx(expected, abs=1e-4)
    assert control_values(generation_dataset, AnalysisSettings(values=(0.2, 0.4))) == (0.2, 0.4)


def test_pca_orders_axes_by_variance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) * np.array([5.0, 0.1, 2.0, 0.1, 0.1])
    points = pca_2d(x)
    assert points.shape == (200, 2)
    assert points[:, 0].var() > points[:, 1].var() > 3.0
    assert abs(np.corrcoef(points[:, 0], x[:, 0])[0, 1]) > 0.99
    assert pca_2d(np.ones((4, 1)) * np.arange(4)[:, None]).shape == (4, 2)  # one dimension


def test_analyze_writes_table_json_and_plots(tmp_path, generation_dataset):
    # Two models of one architecture share compiled code; one has an attribute vector.
    steered = make_checkpoint(tmp_path / "steered", "none", seed=1)
    plain = make_checkpoint(tmp_path / "plain", "none", seed=2)
    model = TrainedModel.load(steered, batch_size=1)
    vector = compute_attribute_vector(model, generation_dataset, fraction=0.5)
    vector.save(steered / "checkpoints" / "0" / ATTRIBUTE_FILE)
    out = tmp_path / "analysis"
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    argv = ["analyze", "--checkpoints", steered, plain, "--data", generation_dataset, "--out", out]
    argv += ["--max-windows", "8", "--samples-per-value", "2", "--edit-windows", "2"]
    argv += ["--temperature", "1", "--batch-size", "1", "--prior-samples", "4"]
    argv += ["--values", ",".join(str(v) for v in values)]
    assert run_cli(*argv) == 0

    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["split"] == "test" and len(report["models"]) == 2
    for result in report["models"]:
        assert result["conditioning"] == "none" and result["windows"] == 8
        assert result["values"] == pytest.approx(values)
        assert math.isfinite(result["elbo"]) and result["elbo"] < 0
        assert result["kl_bits"] >= 0
        for key in (
            "accuracy",
            "sampled_accuracy",
            "greedy_accuracy",
            "shuffled_accuracy",
            "baseline_accuracy",
            "prior_valid",
            "prior_valid_refined",
            "real_valid",
            "interpolation_smoothness",
        ):
            assert 0 <= result[key] <= 1, key
        assert result["code_probe_rho"] is None  # every window here has the same rhythm
        assert set(result["validity_bounds"]) == {"pitch_range", "mean_interval", "in_key"}
        for key in ("reconstruction_png", "interpolation_png"):
            assert Path(result[key]).read_bytes()[:4] == b"\x89PNG"
    assert (out / "model0_edits.png").read_bytes()[:4] == b"\x89PNG"  # the steered model
    assert not (out / "model1_edits.png").exists()  # `none` without a vector: no edits
    with_vector, without = report["models"]
    for key in ("control_generated", "control_edited"):
        assert with_vector[key] is not None and -1 <= with_vector[key] <= 1
        assert without[key] is None  # `none` without an attribute vector cannot be steered
    assert 0 <= with_vector["edit_keeps"] <= 1 and without["edit_keeps"] is None
    for kind in ("generated", "edited"):
        measures = with_vector[kind]
        for key in ("validity", "diversity", "linearity"):
            assert 0 <= measures[key] <= 1, key
        assert len(measures["held_out_rho"]) == 8 and without[kind] is None
    for kind in ("generated", "edited", "keeps"):
        curve = with_vector["curves"][kind]
        assert len(curve) == 9 and all(0 <= v <= 1 for v in curve)
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 14 and table[2].startswith(f"| {steered} | none | 8 |")
    assert table[12].startswith(f"| {steered} | generated | ")
    assert table[13].startswith(f"| {steered} | edited | ")
    assert table[3].split(" | ")[-4:-1] == ["n/a", "n/a", "n/a"]
    assert table[7].startswith(f"| {steered} | ") and table[8].startswith(f"| {plain} | ")
    for name in ("control.png", "mu_pca.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_analyze_refuses_a_dataset_of_another_shape(tmp_path, generation_dataset, caplog):
    from jax_musicvae.checkpoints import save_params_checkpoint

    longer = tiny_model_experiment("none", num_bars=4)
    save_params_checkpoint(tmp_path / "m", random_params(longer.model), longer.to_dict())
    argv = [
        "analyze",
        "--checkpoints",
        tmp_path / "m",
        "--data",
        generation_dataset,
        "--out",
        tmp_path / "a",
    ]
    assert run_cli(*argv) == 2
    assert "windows of 32 steps but the model expects num_bars x steps_per_bar = 64" in (
        caplog.text
    )
