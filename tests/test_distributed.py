"""Data parallel on 8 fake CPU devices, 2 processes x 2 devices, restore onto other meshes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import tiny_config

from jax_musicvae import checkpoints as ckpt
from jax_musicvae.data.loader import make_loader
from jax_musicvae.models import init_params
from jax_musicvae.train import Run, Trainer, make_mesh

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_worker(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_eight_devices_match_one_and_restore_elsewhere(train_dataset, tmp_path):
    result = result_of(run_worker("eight", train_dataset, tmp_path))
    print(result)
    assert result["devices"] == 8
    assert result["params_8_vs_1"] < 1e-5
    assert result["loss_8_vs_1_relative"] < 1e-5  # losses are ~140 nats: compare relatively
    assert result["restored_2x4_vs_saved"] == 0.0
    assert "P('model', None)" in result["restored_2x4_specs"]
    assert result["restored_step"] == 3
    assert result["restored_1_vs_saved"] == 0.0
    assert result["restored_1_devices"] == ["cpu:0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(train_dataset, tmp_path):
    port = free_port()
    workers = [run_worker("process", train_dataset, tmp_path, i, port) for i in range(2)]
    results = [result_of(w) for w in workers]
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 4 and r["step"] == 3 for r in results)
    _, distributed = ckpt.load_params(tmp_path)

    # One process, one device, fed the same global batches: each process's shard of
    # the records, process 0's rows first.
    config = tiny_config(num_steps=3).override(["mesh.data=1"])
    trainer = Trainer(config, make_mesh(config))
    state = trainer.initial_state(init_params(config.model, jax.random.key(config.train.seed)))
    loaders = [
        iter(
            make_loader(
                train_dataset,
                "train",
                batch_size=4,
                seed=config.train.seed,
                process_index=i,
                process_count=2,
            )
        )
        for i in range(2)
    ]
    run = Run(step=0, key=jax.random.key(config.train.seed))
    for _ in range(3):
        parts = [next(it) for it in loaders]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        state, _ = trainer.train_step(state, trainer.global_batch(batch), run)
        run.step += 1
    diffs = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), state.params, distributed
    )
    print("2 processes vs 1: max difference", max(jax.tree.leaves(diffs)))
    assert max(jax.tree.leaves(diffs)) < 1e-5
    assert (tmp_path / "metrics.jsonl").exists()
