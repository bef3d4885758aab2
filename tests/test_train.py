"""The trainer: outputs, exact resumption (also after kill -9), non-finite abort, fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import assert_trees_equal, set_args, tiny_config

from jax_musicvae import checkpoints as ckpt
from jax_musicvae import steps
from jax_musicvae.config import ConfigError
from jax_musicvae.models import init_params
from jax_musicvae.train import TrainingError, check_dataset, train


@pytest.fixture(scope="module")
def reference(train_dataset, tmp_path_factory):
    """An uninterrupted 8-step run (every step checkpointed, as the killed run below)."""
    workdir = tmp_path_factory.mktemp("reference")
    config = tiny_config(num_steps=8, checkpoint_every=1, log_every=1)
    return config, train(config, train_dataset, workdir), workdir


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_outputs(reference):
    config, summary, workdir = reference
    assert summary["step"] == 8
    logged = records(workdir)
    evals = [r for r in logged if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 8]
    for name in (
        "elbo",
        "recon",
        "kl_bits",
        "accuracy",
        "sampled_accuracy",
        "greedy_accuracy",
        "shuffled_accuracy",
    ):
        assert np.isfinite(evals[-1][name])
    assert 0.0 < logged[0]["baseline_accuracy"] < 1.0
    assert [r["step"] for r in logged if r["split"] == "train"] == list(range(1, 9))
    assert all(r["examples_per_second"] > 0 for r in logged if r["split"] == "train")
    for name in ("curves.png", "reconstructions.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    # keep=2 latest plus the best evaluated step
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    best = max(evals, key=lambda r: r["elbo"])["step"]
    assert kept == sorted({7, 8, best})
    _, best_params = ckpt.load_params(workdir, best=True)
    assert ckpt.best_step(ckpt.make_manager(workdir / "checkpoints", read_only=True)) == best
    assert_trees_equal(ckpt.load_params(workdir)[1], summary["params"])
    assert_trees_equal(best_params, ckpt.load_params(workdir, step=best)[1])


def test_resume_from_a_checkpoint_is_bitwise_exact(reference, train_dataset, tmp_path):
    config, summary, _ = reference
    first = dataclasses.replace(config, train=dataclasses.replace(config.train, num_steps=5))
    train(first, train_dataset, tmp_path)
    with pytest.raises(TrainingError, match="--resume"):
        train(config, train_dataset, tmp_path)
    resumed = train(config, train_dataset, tmp_path, resume=True)
    assert resumed["step"] == 8
    assert_trees_equal(resumed["params"], summary["params"])
    steps = [r["step"] for r in records(tmp_path) if r["split"] == "train"]
    assert steps == list(range(1, 9))


def test_resume_from_a_checkpoint_with_the_directions_apart(reference, train_dataset, tmp_path):
    """A run checkpointed before the encoder's directions were stacked (parameters and
    Adam moments under `l{k}_fwd`/`l{k}_bwd`) resumes bitwise where it stopped."""
    config, summary, _ = reference
    first = dataclasses.replace(config, train=dataclasses.replace(config.train, num_steps=5))
    train(first, train_dataset, tmp_path)
    directory = tmp_path / ckpt.CHECKPOINT_DIR
    manager = ckpt.make_manager(directory, keep=10, keep_best=False, async_saves=False)
    _, params = ckpt.load_params(tmp_path, step=5)
    state = steps.create_state(config.model, config.optim, params)
    opt = ckpt.restore_item(
        manager, 5, ckpt.OPT_STATE, {"step": state.step, "opt_state": state.opt_state}
    )
    saved_config, progress = ckpt.read_config(manager, 5), ckpt.read_progress(manager, 5)
    shutil.rmtree(directory / "5")
    manager.reload()
    old_args = {
        ckpt.PARAMS: ocp.args.StandardSave(ckpt.split_directions(params)),
        ckpt.OPT_STATE: ocp.args.StandardSave(ckpt.split_directions(opt)),
        ckpt.CONFIG: ocp.args.JsonSave(saved_config),
        ckpt.PROGRESS: ocp.args.JsonSave(progress),
    }
    manager.save(5, args=ocp.args.Composite(**old_args), force=True)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    assert ckpt.has_split_directions(ckpt.abstract_tree(manager, 5, ckpt.PARAMS, device))
    manager.close()
    resumed = train(config, train_dataset, tmp_path, resume=True)
    assert resumed["step"] == 8
    assert_trees_equal(resumed["params"], summary["params"])


def test_resume_after_the_dataset_moved_and_not_with_another(reference, train_dataset, tmp_path):
    config, summary, _ = reference
    first = dataclasses.replace(config, train=dataclasses.replace(config.train, num_steps=5))
    shutil.copytree(train_dataset, tmp_path / "data")
    workdir = tmp_path / "run"
    train(first, tmp_path / "data", workdir)
    (tmp_path / "data").rename(tmp_path / "moved")
    other = shutil.copytree(train_dataset, tmp_path / "other")  # its content named otherwise
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "content_hash": "0" * 64}))
    with pytest.raises(TrainingError, match="resume with the dataset the run was trained on"):
        train(config, other, workdir, resume=True)
    resumed = train(config, tmp_path / "moved", workdir, resume=True)
    assert resumed["step"] == 8
    assert_trees_equal(resumed["params"], summary["params"])


@pytest.mark.slow
def test_kill_9_then_resume_is_bitwise_exact(reference, train_dataset, tmp_path):
    """SIGKILL a CLI run once step 4 is logged (saves every step, so often mid-save)."""
    config, summary, _ = reference
    command = [sys.executable, "-m", "jax_musicvae.cli", "train", "--data", str(train_dataset)]
    command += ["--workdir", str(tmp_path), "--config", "cpu_small", *set_args(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if log.exists() and '"step": 4, "split": "train"' in log.read_text():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    killed_at = max(r["step"] for r in records(tmp_path) if "step" in r)
    assert 4 <= killed_at < 8
    resumed = train(config, train_dataset, tmp_path, resume=True)
    assert_trees_equal(resumed["params"], summary["params"])


def test_nonfinite_updates_are_skipped_then_abort(train_dataset, tmp_path):
    config = tiny_config(num_steps=20, max_consecutive_nonfinite=3, log_every=1)
    config = config.override(["optim.learning_rate=1e38"])
    with pytest.raises(TrainingError, match="3 non-finite updates in a row"):
        train(config, train_dataset, tmp_path)
    skipped = [r for r in records(tmp_path) if r["split"] == "nonfinite"]
    assert len(skipped) == 3 and all(r["skipped"] == 1.0 for r in skipped)


def test_fine_tune_from_a_parameters_only_checkpoint(train_dataset, tmp_path):
    config = tiny_config(num_steps=2, eval_every=2)
    params = init_params(config.model, jax.random.key(42))
    ckpt.save_params_checkpoint(tmp_path, params, config.to_dict())
    summary = train(config, train_dataset, tmp_path, resume=True)
    assert summary["step"] == 2
    changed = jax.tree.map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), params, summary["params"]
    )
    assert any(jax.tree.leaves(changed))
    # Started from the checkpoint, not afresh: 2 Adam steps at lr 3e-3 move each value
    # by at most ~6e-3, while a fresh initialisation would differ by O(0.1).
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), params, summary["params"]
    )
    assert max(jax.tree.leaves(moved)) < 0.02


def test_the_adversary_weight_follows_its_ramp(train_dataset, tmp_path):
    config = tiny_config(num_steps=6, log_every=1, eval_every=6).override(
        [
            "model.conditioning=none",
            "model.adversary_hidden=4",
            "loss.attribute_loss=sign",
            "loss.attribute_adversary=2",
            "loss.attribute_adversary_ramp=4",
        ]
    )
    train(config, train_dataset, tmp_path)
    logged = [r for r in records(tmp_path) if r["split"] == "train"]
    # The record of step s is the update made at 0-based step s - 1.
    assert [r["adversary_weight"] for r in logged] == pytest.approx([0, 0.5, 1, 1.5, 2, 2])
    assert all(r["attribute_adversary"] > 0 for r in logged)


def test_a_dataset_that_does_not_fit_is_named(train_dataset):
    longer = tiny_config().override(["model.num_bars=4"])
    expected = "windows of 32 steps but the model expects num_bars x steps_per_bar = 64"
    with pytest.raises(ConfigError, match=f"^{train_dataset}: {expected}"):
        check_dataset(train_dataset, longer)
    with pytest.raises(
        ConfigError, match="melody90 has depth 90 but the model's input depth is 61"
    ):
        check_dataset(train_dataset, tiny_config().override(["model.input_depth=61"]))


def test_the_train_step_compiler_options_drop_the_loop_copies_and_nothing_else():
    """Region analysis removes the copies XLA:CPU put at the top of the backward loops;
    the step's results stay bitwise the same."""
    model = dataclasses.replace(tiny_config().model, encoder_layers=2, decoder_layers=2)
    config = tiny_config()
    state = steps.create_state(model, config.optim, init_params(model, jax.random.key(0)))
    rng = np.random.default_rng(0)
    batch = {
        "tokens": rng.integers(0, model.input_depth, (8, model.sequence_length)),
        "condition": rng.random(8).astype(np.float32),
    }
    noise = steps.draw_noise(jax.random.key(1), 8, model, scheduled=False)
    args = (state, batch, noise, 0.5, 0.0, None)
    static = {"model": model, "loss": config.loss, "sampling": config.sampling}
    compiled, results = [], []
    for options in ({}, steps.TRAIN_STEP_COMPILER_OPTIONS):
        step = jax.jit(steps.train_step, static_argnames=tuple(static), compiler_options=options)
        compiled.append(step.lower(*args, **static).compile().as_text())
        results.append(step(*args, **static))
    copies = [text.count(" copy(") for text in compiled]
    assert copies[1] < copies[0] - 4, copies
    assert_trees_equal(results[0], results[1])
