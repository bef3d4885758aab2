"""The danceability map: its monotone fit, its inverse and emphasis, how generation uses
it, the fit from a trained model and `musicvae danceability-map`."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_checkpoint, run_cli, tiny_config

from jax_musicvae.danceability_map import (
    CODE_GRID,
    MAP_FILE,
    DanceabilityMap,
    fit_danceability_map,
)
from jax_musicvae.data.source import WindowSource
from jax_musicvae.generate import TrainedModel
from jax_musicvae.statistics import gaussianise, increasing_fit
from jax_musicvae.train import train


def test_increasing_fit_pools_adjacent_violators():
    np.testing.assert_allclose(increasing_fit([1, 3, 2, 4, 0, 5]), [1, 2.25, 2.25, 2.25, 2.25, 5])
    np.testing.assert_allclose(increasing_fit([0.1, 0.2, 0.4]), [0.1, 0.2, 0.4])
    np.testing.assert_allclose(increasing_fit([3, 2, 1]), [2, 2, 2])
    noisy = np.random.default_rng(0).normal(size=50).cumsum()
    fitted = increasing_fit(noisy)
    assert np.all(np.diff(fitted) >= 0)
    assert fitted.mean() == pytest.approx(noisy.mean())  # pooling keeps the sum


def _linear_map(centre: float = 0.5) -> DanceabilityMap:
    """Edits decode 0.5 + 0.1 z, samples 0.4 + 0.1 z, both flat above z = 2."""
    codes = np.linspace(-4, 4, 17)
    return DanceabilityMap(
        codes=tuple(codes),
        edit=tuple(np.minimum(0.5 + 0.1 * codes, 0.7)),
        sample=tuple(np.minimum(0.4 + 0.1 * codes, 0.6)),
        centre=centre,
        windows=8,
        dataset="d",
        split="train",
    )


def test_the_map_inverts_its_curves_and_emphasises_around_the_centre():
    fitted = _linear_map()
    np.testing.assert_allclose(fitted.code(np.array([0.45, 0.6]), "edit"), [-0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(fitted.code(np.array([0.45, 0.6]), "sample"), [0.5, 2.0], atol=1e-6)
    # Emphasis 2 asks for 0.5 + 2 (c - 0.5): 0.45 -> 0.4, 0.55 -> 0.6.
    np.testing.assert_allclose(
        fitted.code(np.array([0.45, 0.55]), "edit", emphasis=2.0), [-1.0, 1.0], atol=1e-6
    )
    # The flat top answers with the code where it starts; below the curve, its bottom end.
    ends = fitted.code(np.array([0.0, 0.69, 0.7, 0.99]), "edit")
    np.testing.assert_allclose(ends, [-4.0, 1.9, 2.0, 2.0], atol=1e-5)
    floor = DanceabilityMap(**{**fitted.__dict__, "edit": (0.3,) * 5 + fitted.edit[5:]})
    np.testing.assert_allclose(floor.code(np.array([0.0, 0.3]), "edit"), [-2.0, -2.0])
    with pytest.raises(ValueError, match="emphasis=0.0 must be > 0"):
        fitted.code(np.array([0.5]), "edit", emphasis=0.0)


def test_the_map_round_trips_and_a_bad_file_is_named(tmp_path):
    fitted = _linear_map()
    again = DanceabilityMap.load(fitted.save(tmp_path / MAP_FILE))
    assert again == fitted
    (tmp_path / "bad.json").write_text('{"codes": [0, 1]}')
    with pytest.raises(ValueError, match="bad.json: not a danceability map"):
        DanceabilityMap.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def regularised(tmp_path_factory, train_dataset):
    """A tiny model trained with the sign loss (the attribute dimension is 0)."""
    workdir = tmp_path_factory.mktemp("regularised")
    config = tiny_config().override(["model.conditioning=none", "loss.attribute_loss=sign"])
    train(config, train_dataset, workdir)
    return workdir


def test_requests_go_through_the_map_for_samples_and_edits(regularised):
    model = TrainedModel.load(regularised, batch_size=4)
    quantiles = model.experiment.loss.attribute_quantiles
    windows = np.asarray(WindowSource(model.experiment.data.path, "validation").tokens[:2])
    before = model.evaluate(windows, np.full(2, 0.7, np.float32))
    model.danceability_map = _linear_map()
    z, _ = model.prior(2, danceability=[0.45, 0.6], seed=1)
    np.testing.assert_allclose(z[:, 0], [0.5, 2.0], atol=1e-6)  # the sample curve
    _, codes, _ = model.edit_codes(windows, 0.6)
    np.testing.assert_allclose(codes[:, 0], [1.0, 1.0], atol=1e-6)  # the edit curve
    held = model.interpolation_codes(windows[0], windows[1], 3, danceability=0.45)[0]
    np.testing.assert_allclose(held[..., 0], -0.5, atol=1e-6)
    # The loss's target stays the Gaussianised value the model was trained on.
    after = model.evaluate(windows, np.full(2, 0.7, np.float32))
    assert after == before
    # Without a map, emphasis pivots on the training median of the frozen transform.
    model.danceability_map, model.emphasis = None, 2.0
    centre = quantiles[len(quantiles) // 2]
    np.testing.assert_allclose(
        model.attribute_code(np.array([centre, centre + 0.01])),
        gaussianise(np.array([centre, centre + 0.02]), quantiles),
    )


def test_decode_refine_keeps_the_attribute_dimension(regularised):
    model = TrainedModel.load(regularised, batch_size=4)
    z, _ = model.prior(3, seed=2)
    z[:, 0] = [-1.0, 0.0, 1.0]
    once = model.decode(z, temperature=0.0)
    refined = model.decode(z, temperature=0.0, refine=1)
    mu = model.encode(once, seed=0).mu
    mu[:, 0] = z[:, 0]
    np.testing.assert_array_equal(refined, model.decode(mu, temperature=0.0, seed=1))


def test_fit_and_cli_store_a_map_that_loading_picks_up(regularised, train_dataset, tmp_path):
    model = TrainedModel.load(regularised, batch_size=8)
    fitted = fit_danceability_map(model, train_dataset, windows=6)
    assert fitted.codes == CODE_GRID and fitted.windows == 6
    for curve in (fitted.edit, fitted.sample):
        assert len(curve) == len(CODE_GRID) and np.all(np.diff(curve) >= 0)
        assert all(0.0 <= v <= 1.0 for v in curve)
    windows = np.median(WindowSource(train_dataset, "train", "window").window_danceability)
    assert fitted.centre == pytest.approx(windows)
    assert fit_danceability_map(model, train_dataset, windows=6) == fitted  # seeded

    argv = ["danceability-map", "--checkpoint", regularised, "--data", train_dataset]
    assert run_cli(*argv, "--windows", "6") == 0
    loaded = TrainedModel.load(regularised, emphasis=1.5)
    assert loaded.danceability_map == fitted and loaded.emphasis == 1.5
    (loaded.checkpoint_dir / MAP_FILE).unlink()

    plain = make_checkpoint(tmp_path / "none", "none")
    with pytest.raises(ValueError, match="needs a model trained with the attribute loss"):
        fit_danceability_map(TrainedModel.load(plain), train_dataset)
    assert run_cli("danceability-map", "--checkpoint", plain, "--data", train_dataset) == 2
    common = ["--checkpoint", regularised, "--out", tmp_path / "s", "-n", "1"]
    with pytest.raises(SystemExit) as refused:  # argparse: "--emphasis: 0: must be > 0"
        run_cli("sample", *common, "--danceability", "0.7", "--emphasis", "0")
    assert refused.value.code == 2
    assert run_cli("sample", *common, "--danceability", "0.7", "--emphasis", "1.5") == 0
    assert (tmp_path / "s").is_dir()


def test_keep_source_applies_only_what_the_request_changes(regularised):
    model = TrainedModel.load(regularised, batch_size=4)
    windows = np.asarray(WindowSource(model.experiment.data.path, "validation").tokens[:3])
    melodies = list(windows)
    edited = np.stack(model.edit(melodies, 0.9, keep_source=False))
    unchanged = np.stack(model.edit(melodies, 0.9, strength=0.0, keep_source=False))
    kept = np.stack(model.edit(melodies, 0.9))  # the default keeps the source
    np.testing.assert_array_equal(kept, np.where(edited == unchanged, windows, edited))
    # Asking for the source's own danceability gives the source back.
    same = np.stack(model.edit(melodies, 0.9, strength=0.0))
    np.testing.assert_array_equal(same, windows)
