"""Checkpoint layout: parameters-only checkpoints, load_params path forms, clear errors."""

from __future__ import annotations

import jax
import pytest
from helpers import assert_trees_equal, tiny_config

from jax_musicvae import checkpoints as ckpt
from jax_musicvae.experiment import ExperimentConfig
from jax_musicvae.models import init_params


def test_params_checkpoint_round_trip(tmp_path):
    config = tiny_config()
    params = init_params(config.model, jax.random.key(3))
    ckpt.save_params_checkpoint(tmp_path / "w", params, config.to_dict(), step=7)
    step_dir = tmp_path / "w" / ckpt.CHECKPOINT_DIR / "7"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == [
        "config",
        "params",
        "progress",
    ]
    for path in (tmp_path / "w", tmp_path / "w" / ckpt.CHECKPOINT_DIR, step_dir):
        stored, loaded = ckpt.load_params(path)
        assert ExperimentConfig.from_dict(stored) == config
        assert_trees_equal(params, loaded)
    # no temporary folders are left behind
    assert [
        p.name for p in (tmp_path / "w" / ckpt.CHECKPOINT_DIR).iterdir() if "tmp" in p.name
    ] == []


def test_latest_and_named_steps(tmp_path):
    config = tiny_config()
    first = init_params(config.model, jax.random.key(0))
    second = init_params(config.model, jax.random.key(1))
    ckpt.save_params_checkpoint(tmp_path, first, config.to_dict(), step=1)
    ckpt.save_params_checkpoint(tmp_path, second, config.to_dict(), step=2)
    assert_trees_equal(ckpt.load_params(tmp_path)[1], second)
    assert_trees_equal(ckpt.load_params(tmp_path, step=1)[1], first)
    # best falls back to the latest when no step was evaluated
    assert_trees_equal(ckpt.load_params(tmp_path, best=True)[1], second)
    with pytest.raises(ckpt.CheckpointError, match="no step 5"):
        ckpt.load_params(tmp_path, step=5)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load_params(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match=str(tmp_path / "empty")):
        ckpt.load_params(tmp_path / "empty")


def test_checkpoints_with_the_directions_apart_still_load(tmp_path):
    """Checkpoints written before the encoder's directions were stacked (`l{k}_fwd`,
    `l{k}_bwd`) load in the current layout."""
    config = tiny_config()
    params = init_params(config.model, jax.random.key(3))
    old = ckpt.split_directions(params)
    assert sorted(old["encoder"]["rnn"]) == ["l0_bwd", "l0_fwd"]
    assert ckpt.has_split_directions(old) and not ckpt.has_split_directions(params)
    ckpt.save_params_checkpoint(tmp_path, old, config.to_dict(), step=1)
    assert_trees_equal(ckpt.load_params(tmp_path)[1], params)
