"""Danceability control: the frozen attribute transform, the attribute loss terms,
window-level danceability, training and generation with the attribute dimension, and
the control measures of `jax_musicvae.control`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import make_checkpoint, tiny_config, write_midi_file

from jax_musicvae import losses, schedules, steps
from jax_musicvae.attributes import (
    STEP_SCALES,
    AttributeVector,
    compute_attribute_vector,
    regression_direction,
)
from jax_musicvae.config import ConfigError, LossConfig, SamplingConfig
from jax_musicvae.control import (
    control_measures,
    diversity,
    edit_keeps,
    rhythm_estimates,
    traversal_linearity,
)
from jax_musicvae.data.dataset import BuildSettings, build_dataset
from jax_musicvae.data.melody_stats import ValidityBounds
from jax_musicvae.data.representations import Melody90
from jax_musicvae.data.rhythm import (
    WEIGHTS,
    melody_danceability,
    melody_rhythm,
    rhythm_features,
    window_danceability_estimates,
)
from jax_musicvae.data.source import WindowSource, load_manifest
from jax_musicvae.experiment import ExperimentConfig
from jax_musicvae.generate import TrainedModel
from jax_musicvae.losses import attribute_terms
from jax_musicvae.models import MusicVAE, init_params
from jax_musicvae.statistics import attribute_quantiles, degaussianise, gaussianise, spearman
from jax_musicvae.train import train
from torch_reference.loss import attribute_terms as torch_attribute_terms
from torch_reference.loss import elbo_loss as torch_elbo_loss

MEL = Melody90()


# ------------------------------------------------------------- the transform


def test_gaussianise_is_a_standard_normal_score_and_inverts():
    values = np.random.default_rng(0).gamma(2.0, 0.1, 4000)
    quantiles = attribute_quantiles(values)
    scores = gaussianise(values, quantiles)
    assert abs(scores.mean()) < 0.02 and abs(scores.std() - 1.0) < 0.03
    assert np.all(np.diff(scores[np.argsort(values)]) >= 0)  # order kept
    middle = np.quantile(values, [0.2, 0.5, 0.8])
    np.testing.assert_allclose(
        degaussianise(gaussianise(middle, quantiles), quantiles), middle, rtol=1e-5
    )
    # Outside the training range: the ends of the range, not infinity.
    ends = gaussianise(np.array([-10.0, 10.0]), quantiles)
    assert np.all(np.isfinite(ends)) and ends[0] < -2.5 and ends[1] > 2.5


def test_gaussianise_with_ties_keeps_one_score_per_value():
    labels = np.repeat([0.1, 0.6, 0.9], [200, 500, 300])
    scores = gaussianise(labels, attribute_quantiles(labels))
    assert len(np.unique(scores)) == 3
    assert scores[0] < scores[200] < scores[-1]


def test_attribute_quantiles_refuse_a_constant():
    with pytest.raises(ValueError, match="two distinct"):
        attribute_quantiles(np.full(10, 0.5))


def test_attribute_settings_are_checked():
    with pytest.raises(ConfigError, match="attribute_loss"):
        LossConfig(attribute_loss="ranking")
    with pytest.raises(ConfigError, match="sorted"):
        LossConfig(attribute_loss="regression", attribute_quantiles=(0.5, 0.2))
    config = tiny_config()
    with pytest.raises(ConfigError, match="attribute_dimension=3 must be below the 3"):
        ExperimentConfig(
            model=config.model, loss=LossConfig(attribute_loss="sign", attribute_dimension=3)
        )
    with pytest.raises(ConfigError, match="attribute_adversary must be >= 0"):
        LossConfig(attribute_adversary=-1.0)
    with pytest.raises(ConfigError, match="set model.adversary_hidden > 0"):
        ExperimentConfig(model=config.model, loss=LossConfig(attribute_adversary=1.0))
    # Stored as a JSON list, rebuilt as a (hashable) tuple.
    loss = LossConfig(attribute_loss="regression", attribute_quantiles=[0.1, 0.5, 0.9])
    assert loss.attribute_quantiles == (0.1, 0.5, 0.9) and hash(loss)


# ------------------------------------------------------------- the loss terms


def _reference_terms(z: np.ndarray, t: np.ndarray, r: int | None, scale: float) -> dict[str, float]:
    """The formulas of LossConfig's docstring, written out with loops (r None: no
    regularised dimension, every dimension decorrelated)."""
    m = len(t)
    decorrelation = sum(np.corrcoef(z[:, k], t)[0, 1] ** 2 for k in range(z.shape[1]) if k != r)
    rr = 0 if r is None else r
    sign = np.mean(
        [
            abs(np.tanh(scale * (z[i, rr] - z[j, rr])) - np.sign(t[i] - t[j]))
            for i in range(m)
            for j in range(m)
        ]
    )
    others = z if r is None else np.delete(z, r, axis=1)
    dx = np.array([[np.sum((a - b) ** 2) for b in others] for a in others])
    dt = np.array([[(a - b) ** 2 for b in t] for a in t])
    k, l_ = np.exp(-dx / dx.mean()), np.exp(-dt / dt.mean())
    h = np.eye(m) - 1.0 / m
    hsic = np.trace(k @ h @ l_ @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(l_ @ h @ l_ @ h))
    return {
        "independence": float(hsic),
        "regression": float(np.mean(np.abs(z[:, rr] - t))),
        "sign": float(sign),
        "decorrelation": float(decorrelation),
        "correlation": float(np.corrcoef(z[:, rr], t)[0, 1]),
    }


@pytest.mark.parametrize("kind", ["regression", "sign", "none"])
def test_attribute_terms_match_their_formulas_in_both_frameworks(kind):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 5)).astype(np.float32)
    t = rng.normal(size=7).astype(np.float32)
    r = None if kind == "none" else 2
    loss = LossConfig(
        attribute_loss=kind,
        attribute_dimension=r or 0,
        attribute_sign_scale=2.0,
        attribute_decorrelation=1.0,
        attribute_independence=1.0,
    )
    expected = _reference_terms(z.astype(np.float64), t.astype(np.float64), r, 2.0)
    flax = attribute_terms(jnp.asarray(z), jnp.asarray(t), loss)
    reference = torch_attribute_terms(torch.tensor(z), torch.tensor(t), loss)
    for terms in (flax, reference):
        if kind != "none":
            regulariser = float(terms["attribute_regulariser"])
            assert regulariser == pytest.approx(expected[kind], rel=1e-5)
        assert float(terms["attribute_decorrelation"]) == pytest.approx(
            expected["decorrelation"], rel=1e-4
        )
        assert float(terms["attribute_correlation"]) == pytest.approx(
            expected["correlation"], rel=1e-4
        )
        assert float(terms["attribute_independence"]) == pytest.approx(
            expected["independence"], rel=1e-4
        )


def test_the_independence_term_sees_dependence_that_correlation_misses():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(64, 4)).astype(np.float32)
    loss = LossConfig(attribute_loss="regression", attribute_independence=1.0)
    independent = attribute_terms(jnp.asarray(z), jnp.asarray(rng.normal(size=64)), loss)
    # t depends on dimension 1 through its square: no correlation, strong dependence.
    squared = z[:, 1] ** 2 - 1.0
    dependent = attribute_terms(jnp.asarray(z), jnp.asarray(squared), loss)
    assert float(dependent["attribute_decorrelation"]) < 0.1
    assert float(dependent["attribute_independence"]) > 3 * float(
        independent["attribute_independence"]
    )


def test_the_adversary_learns_while_the_encoder_works_against_it():
    """A step down the gradient of the adversary's term lowers its error through its
    own weights and raises it through the encoder's (the gradient reversal); the
    regularised dimension is hidden from it."""
    model = dataclasses.replace(tiny_config().model, conditioning="none", adversary_hidden=8)
    loss = LossConfig(attribute_loss="sign", attribute_dimension=1, attribute_adversary=1.0)
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.integers(0, model.input_depth, (16, model.sequence_length)))
    batch = {"tokens": tokens, "attribute": jnp.asarray(rng.normal(size=16), jnp.float32)}
    noise = steps.Noise(jnp.zeros((16, model.z_size)))
    params = init_params(model, jax.random.key(0))

    def objective(params, loss):
        return steps.loss_and_metrics(params, batch, noise, 1.0, 0.0, model, loss, SamplingConfig())

    def grads(loss):
        return jax.grad(lambda p: objective(p, loss)[0])(params)

    without = dataclasses.replace(loss, attribute_adversary=0.0)
    term = jax.tree.map(jnp.subtract, grads(loss), grads(without))  # the term's gradient

    def error_after(part):
        stepped = {
            name: jax.tree.map(lambda p, g: p - 0.05 * g, value, term[name])
            if name == part
            else value
            for name, value in params.items()
        }
        return float(objective(stepped, loss)[1]["attribute_adversary"])

    before = error_after(None)
    assert error_after("adversary") < before < error_after("encoder")
    vae = MusicVAE(model)
    z = rng.normal(size=(4, model.z_size)).astype(np.float32)
    moved = z.copy()
    moved[:, 1] += 3.0

    def predict(z):
        return vae.apply({"params": params}, z, 1, method=MusicVAE.predict_attribute)

    np.testing.assert_array_equal(predict(z), predict(moved))
    moved[:, 0] += 3.0
    assert not np.allclose(predict(z), predict(moved))


def test_a_bounded_adversary_cannot_be_driven_past_its_bound():
    """With model.adversary_bound the prediction is bound * tanh(unbounded / bound): a
    code scaled far out moves the unbounded prediction without limit, the bounded one
    stays within the bound, and its gradient there vanishes."""
    model = dataclasses.replace(tiny_config().model, conditioning="none", adversary_hidden=8)
    bounded = dataclasses.replace(model, adversary_bound=1.5)
    params = init_params(model, jax.random.key(0))
    z = np.random.default_rng(2).normal(size=(6, model.z_size)).astype(np.float32)

    def predict(config, z):
        return MusicVAE(config).apply(
            {"params": params}, jnp.asarray(z), None, method=MusicVAE.predict_attribute
        )

    raw = np.asarray(predict(model, z))
    np.testing.assert_allclose(predict(bounded, z), 1.5 * np.tanh(raw / 1.5), rtol=1e-6)
    far = 1000.0 * z
    assert np.max(np.abs(np.asarray(predict(model, far)))) > 100.0
    assert np.max(np.abs(np.asarray(predict(bounded, far)))) <= 1.5
    slope = jax.grad(lambda z: jnp.sum(predict(bounded, z)))(jnp.asarray(far))
    assert float(jnp.max(jnp.abs(slope))) < 1e-3
    with pytest.raises(ConfigError, match="adversary_bound must be >= 0"):
        dataclasses.replace(model, adversary_bound=-1.0)


def test_the_adversary_weight_ramps_and_both_losses_take_it():
    loss = LossConfig(attribute_loss="sign", attribute_adversary=2.0, attribute_adversary_ramp=400)
    assert [schedules.adversary_weight(s, loss) for s in (0, 100, 400, 9000)] == [
        0.0,
        0.5,
        2.0,
        2.0,
    ]
    assert (
        schedules.adversary_weight(0, dataclasses.replace(loss, attribute_adversary_ramp=0)) == 2.0
    )
    with pytest.raises(ConfigError, match="attribute_adversary_ramp must be >= 0"):
        LossConfig(attribute_adversary_ramp=-1)

    model = dataclasses.replace(tiny_config().model, conditioning="none", adversary_hidden=4)
    rng = np.random.default_rng(6)
    b, t = 8, model.sequence_length
    arrays = {
        "logits": rng.normal(size=(b, t, model.input_depth)),
        "tokens": rng.integers(0, model.input_depth, (b, t)),
        "mu": rng.normal(size=(b, model.z_size)),
        "sigma": rng.uniform(0.5, 1.5, (b, model.z_size)),
        "z": rng.normal(size=(b, model.z_size)),
        "attribute": rng.normal(size=b),
        "prediction": rng.normal(size=b),
    }
    arrays = {k: v if k == "tokens" else v.astype(np.float32) for k, v in arrays.items()}
    error = np.mean(np.square(arrays["prediction"] - arrays["attribute"]))

    def jax_total(weight):
        a = {k: jnp.asarray(v) for k, v in arrays.items()}
        value, _ = losses.elbo_loss(
            a["logits"], a["tokens"], a["mu"], a["sigma"], loss, model, 0.1, z=a["z"],
            attribute=a["attribute"], adversary_prediction=a["prediction"],
            adversary_weight=weight,
        )  # fmt: skip
        return float(value)

    def torch_total(weight):
        a = {k: torch.tensor(v) for k, v in arrays.items()}
        value, _ = torch_elbo_loss(
            a["logits"], a["tokens"], a["mu"], a["sigma"], loss, model, 0.1, z=a["z"],
            attribute=a["attribute"], adversary_prediction=a["prediction"],
            adversary_weight=weight,
        )  # fmt: skip
        return float(value)

    for total in (jax_total, torch_total):
        assert total(0.5) - total(0.0) == pytest.approx(0.5 * error, rel=1e-4)
        assert total(None) - total(0.0) == pytest.approx(2.0 * error, rel=1e-4)


# ------------------------------------------------- window-level danceability


def test_dataset_carries_window_danceability_and_the_ceiling(train_dataset):
    source = WindowSource(train_dataset, "train", "window")
    expected = window_danceability_estimates(np.asarray(source.tokens), MEL)
    np.testing.assert_allclose(source.condition, expected, rtol=1e-6)
    assert (train_dataset / "train" / "window_danceability.npy").is_file()
    assert source[3]["condition"] == pytest.approx(melody_danceability(source.tokens[3], MEL))
    song = WindowSource(train_dataset, "train")
    assert not np.allclose(song.condition, source.condition)
    with pytest.raises(ValueError, match="danceability='bar' must be one of song, window"):
        WindowSource(train_dataset, "train", "bar")


def test_the_manifest_gives_the_song_level_ceiling(tmp_path):
    """Dense songs labelled danceable, sparse ones not: the window estimate agrees."""

    class ByRhythm:
        def values(self, songs, rhythms):
            return {s.song_id: 0.9 if int(s.song_id[4:6]) % 2 else 0.2 for s in songs}

    (tmp_path / "midi").mkdir()
    for i in range(6):
        step = 120 if i % 2 else 960  # sixteenths or half notes
        notes = [(k * step, step, 60 + k % 7) for k in range(8 * 1920 // step)]
        write_midi_file(tmp_path / "midi" / f"song{i:02d}.mid", [(0, False, notes)])
    build_dataset(
        str(tmp_path / "midi"),
        tmp_path / "ds",
        BuildSettings(num_bars=2, split=(1.0, 0.0, 0.0), representation="melody90"),
        cache_dir=tmp_path / "cache",
        progress=False,
        danceability_source=ByRhythm(),
    )
    counts = load_manifest(tmp_path / "ds")["counts"]["splits"]["train"]
    source = WindowSource(tmp_path / "ds", "train")
    expected = spearman(source.song_danceability, source.window_danceability)
    assert expected > 0.8
    assert counts["song_vs_window_danceability_spearman"] == pytest.approx(expected, abs=1e-4)


def test_a_dataset_without_the_file_estimates_it(train_dataset, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(train_dataset, copy)
    (copy / "validation" / "window_danceability.npy").unlink()
    old = WindowSource(copy, "validation", "window").condition
    np.testing.assert_allclose(old, WindowSource(train_dataset, "validation", "window").condition)


# ------------------------------------------------- training and generation


@pytest.fixture(scope="module")
def controlled(tmp_path_factory, train_dataset):
    """A tiny model trained 6 steps with the attribute loss (the tiny dataset's windows
    share one rhythm, so the song-level value is the attribute here)."""
    workdir = tmp_path_factory.mktemp("controlled")
    config = tiny_config()
    config = config.override(
        [
            "model.conditioning=none",
            "loss.attribute_loss=regression",
            "loss.attribute_decorrelation=0.1",
        ]
    )
    train(config, train_dataset, workdir)
    return workdir


def test_training_freezes_the_transform_into_the_stored_config(controlled, train_dataset):
    stored = TrainedModel.load(controlled).experiment
    quantiles = stored.loss.attribute_quantiles
    values = WindowSource(train_dataset, "train").condition
    np.testing.assert_allclose(quantiles, attribute_quantiles(values), rtol=1e-6)
    metrics = [json.loads(line) for line in (controlled / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in metrics if m.get("split") == "train"]
    assert trained and all(np.isfinite(m["attribute_regulariser"]) for m in trained)


def test_requests_set_the_attribute_dimension(controlled):
    model = TrainedModel.load(controlled, batch_size=4)
    assert model.attribute_dimension == 0 and model.controllable
    quantiles = model.experiment.loss.attribute_quantiles
    z, _ = model.prior(4, danceability=[0.6, 0.7, 0.7, 0.8], seed=1)
    np.testing.assert_allclose(z[:, 0], gaussianise(np.array([0.6, 0.7, 0.7, 0.8]), quantiles))
    plain, _ = model.prior(4, seed=1)
    np.testing.assert_array_equal(z[:, 1:], plain[:, 1:])  # the rest of z is untouched
    with pytest.raises(ConfigError, match="window-level danceability: an attribute needs"):
        loss = dataclasses.replace(model.experiment.loss, attribute_quantiles=())
        experiment = dataclasses.replace(model.experiment, loss=loss)
        experiment = experiment.override(["data.danceability=window"])
        train(experiment, experiment.data.path, controlled / "window")
    windows = np.asarray(WindowSource(model.experiment.data.path, "validation").tokens[:2])
    enc, codes, condition = model.edit_codes(windows, 0.75)
    assert condition is None
    np.testing.assert_allclose(codes[:, 0], gaussianise(np.full(2, 0.75), quantiles))
    np.testing.assert_array_equal(codes[:, 1:], enc.mu[:, 1:])
    held = model.interpolation_codes(windows[0], windows[1], 3, danceability=0.7)[0]
    np.testing.assert_allclose(held[..., 0], gaussianise(np.array(0.7), quantiles))
    assert model.sample(2, 0.7, seed=0).shape == (2, model.config.sequence_length)


def test_refinement_keeps_the_requested_attribute_value(controlled):
    """One decode-encode round decodes the mu of the first decoding with the attribute
    dimension held at the request, for samples and for edits."""
    model = TrainedModel.load(controlled, batch_size=4)
    first = model.sample(3, 0.7, temperature=1.0, seed=2, refine=0)
    mu = model.encode(list(first), danceability=0.7).mu
    expected = model.decode(mu, 0.7, temperature=1.0, seed=3)
    np.testing.assert_array_equal(model.sample(3, 0.7, temperature=1.0, seed=2), expected)
    windows = np.asarray(WindowSource(model.experiment.data.path, "validation").tokens[:2])
    edited = np.stack(model.edit(windows, 0.75, refine=0, keep_source=False))
    mu = model.encode(list(edited), danceability=0.75).mu
    np.testing.assert_array_equal(
        np.stack(model.edit(windows, 0.75, keep_source=False)), model.decode(mu, 0.75, 0.0, seed=1)
    )


# ------------------------------------------------------ the control measures


def _melody_with_onsets(every: int, pitch: int = 60, steps: int = 32) -> np.ndarray:
    tokens = np.zeros(steps, np.int32)
    tokens[::every] = pitch - MEL.low + MEL.first_note_on
    return tokens


def _traversals(values: int, count: int, seed: int) -> np.ndarray:
    """[V, N, T]: for request v, onsets every (V - v) steps (denser = more danceable),
    each code its own pitch, with a random extra onset so outputs differ."""
    rng = np.random.default_rng(seed)
    out = np.zeros((values, count, 32), np.int32)
    for v in range(values):
        for n in range(count):
            row = _melody_with_onsets(values - v + 1, pitch=60 + n % 12)
            row[rng.integers(1, 32)] = MEL.first_note_on + 40 + n % 5
            out[v, n] = row
    return out


def test_rhythm_estimates_full_is_the_estimate_and_variants_differ():
    tokens = _traversals(3, 4, 0).reshape(12, 32)
    estimates = rhythm_estimates(tokens, MEL)
    np.testing.assert_allclose(
        estimates["full"], [melody_danceability(t, MEL) for t in tokens], atol=1e-12
    )
    assert not np.allclose(estimates["without_density"], estimates["full"])
    assert len(estimates) == 9
    features = rhythm_features(melody_rhythm(tokens[0], MEL))
    kept = {n: w for n, w in WEIGHTS.items() if n != "density"}
    by_hand = sum(w * features[n] for n, w in kept.items()) / (1.0 - WEIGHTS["density"])
    assert estimates["without_density"][0] == pytest.approx(by_hand)


def test_measures_reward_real_control_and_catch_constant_patterns():
    tokens = _traversals(5, 8, 1)
    requested = rhythm_estimates(tokens[:, 0], MEL)["full"]
    bounds = ValidityBounds.fit(tokens.reshape(-1, 32), MEL)
    good = control_measures(requested, tokens, MEL, bounds, seed=0)
    assert good["rho"] > 0.8 and good["rho_low"] <= good["rho"] <= good["rho_high"]
    assert good["linearity"] > 0.5 and good["diversity"] == 1.0
    assert good["restrictiveness"]["mean_pitch"] > 0.5  # pitch does not move with the request
    # One fixed melody per request: perfect order, but diversity exposes it.
    constant = np.repeat(tokens[:, :1], 8, axis=1)
    gamed = control_measures(requested, constant, MEL, bounds, seed=0)
    assert gamed["rho"] > 0.8 and gamed["diversity"] == pytest.approx(1 / 8)
    # Requests ignored: rho near 0, traversals flat.
    ignored = np.repeat(tokens[2:3], 5, axis=0)
    flat = control_measures(requested, ignored, MEL, bounds, seed=0)
    assert flat["rho"] is None or abs(flat["rho"]) < 0.2
    assert flat["linearity"] == 0.0


def test_traversal_linearity_and_diversity_by_hand():
    requested = np.array([0.1, 0.2, 0.3])
    assert traversal_linearity(requested, np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])) == 0.5
    tokens = np.zeros((2, 4, 8), np.int32)
    tokens[0, 1, 0] = 1
    assert diversity(tokens) == 0.25


def test_edit_keeps_reads_small_changes_separately():
    windows = np.zeros((2, 4), np.int32)
    edited = np.zeros((2, 2, 4), np.int32)
    edited[1] = 1  # the far request changed everything
    keeps = edit_keeps([0.5, 0.95], np.array([0.5, 0.55]), windows, edited)
    assert keeps == {"keeps": 0.5, "keeps_small_change": 1.0}


# ------------------------------------------------------ training-free baseline


def test_regression_direction_moves_the_fit_by_the_step():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(500, 6))
    danceability = (
        0.7 + mu @ np.array([0.05, -0.02, 0.0, 0.01, 0.0, 0.03]) + rng.normal(0, 0.01, 500)
    )
    direction = regression_direction(mu, danceability)
    centred = mu - mu.mean(0)
    w = np.linalg.lstsq(np.c_[np.ones(500), centred], danceability, rcond=None)[0][1:]
    assert float(w @ (0.2 * direction)) == pytest.approx(0.2, rel=0.02)


def test_regression_vector_is_stored_with_its_calibrated_step(tmp_path, generation_dataset):
    model = TrainedModel.load(make_checkpoint(tmp_path / "none", "none", seed=1), batch_size=2)
    vector = compute_attribute_vector(model, generation_dataset, fraction=0.5, method="regression")
    assert vector.method == "regression" and vector.step_scale in STEP_SCALES
    again = AttributeVector.from_json(json.loads(json.dumps(vector.to_json())))
    assert again.step_scale == vector.step_scale and again.level == "song"
    with pytest.raises(ValueError, match="method='pca' must be one of contrast, regression"):
        compute_attribute_vector(model, generation_dataset, method="pca")


def test_quickstart_edit_writes_midi_and_picture(controlled, train_dataset, tmp_path):
    from jax_musicvae.commands.quickstart import fit_map, write_edit

    model = TrainedModel.load(controlled, best=True)
    stored = fit_map(model, train_dataset, seed=0)
    assert model.danceability_map is not None
    assert TrainedModel.load(controlled, best=True).danceability_map == model.danceability_map
    assert stored["path"].endswith("danceability_map.json")
    (model.checkpoint_dir / "danceability_map.json").unlink()  # the module's other tests
    report = write_edit(model, train_dataset, tmp_path / "edit", seed=0)
    low, high = np.quantile(WindowSource(train_dataset, "train").window_danceability, [0.1, 0.9])
    assert report["low"]["requested"] == pytest.approx(low)
    assert report["high"]["requested"] == pytest.approx(high)
    assert report["source"]["tokens_kept"] == 1.0
    for name in ("source", "low", "high"):
        assert (tmp_path / "edit" / f"{name}.mid").stat().st_size > 0
        assert 0.0 <= report[name]["measured"] <= 1.0
    assert (tmp_path / "edit" / "edit.png").read_bytes()[:4] == b"\x89PNG"
    plain = make_checkpoint(tmp_path / "plain", "none")
    assert fit_map(TrainedModel.load(plain), train_dataset, seed=0) is None
    assert write_edit(TrainedModel.load(plain), train_dataset, tmp_path / "none", seed=0) is None
