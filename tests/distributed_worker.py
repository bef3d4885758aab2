"""Subprocess entry of tests/test_distributed.py (needs its own CPU device count).

usage: distributed_worker.py eight DATASET WORKDIR
       distributed_worker.py process DATASET WORKDIR PROCESS_ID PORT
Prints one JSON line with the measured differences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax


def eight_devices(dataset: Path, workdir: Path) -> dict:
    """8 devices vs 1 with the same global batch; restore onto 1 device and a 2x4 mesh."""
    import numpy as np
    from helpers import tiny_config

    from jax_musicvae import checkpoints as ckpt
    from jax_musicvae.train import Trainer, _Loaders, _restore, make_mesh, train

    config = tiny_config(num_steps=3, eval_every=3, checkpoint_every=3)
    runs = {}
    for devices in (8, 1):
        setting = config.override([f"mesh.data={devices}"])
        runs[devices] = train(setting, dataset, workdir / str(devices))

    def max_diff(a, b) -> float:
        diffs = jax.tree.map(
            lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b
        )
        return max(jax.tree.leaves(diffs))

    def losses(path: Path) -> list[float]:
        lines = (path / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]

    saved = runs[8]["params"]
    other = config.override(["mesh.data=2", "mesh.model=4", "mesh.shard_params=true"])
    trainer = Trainer(other, make_mesh(other))
    manager = ckpt.make_manager(workdir / "8" / ckpt.CHECKPOINT_DIR, read_only=True)
    state, run = _restore(manager, 3, trainer, _Loaders(other, dataset, trainer))
    specs = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.params)}
    _, on_one = ckpt.load_params(workdir / "8")
    return {
        "devices": jax.device_count(),
        "params_8_vs_1": max_diff(runs[8]["params"], runs[1]["params"]),
        "loss_8_vs_1_relative": float(
            np.max(
                np.abs(np.subtract(losses(workdir / "8"), losses(workdir / "1")))
                / np.abs(losses(workdir / "1"))
            )
        ),
        "restored_2x4_vs_saved": max_diff(state.params, saved),
        "restored_2x4_specs": sorted(specs),
        "restored_step": run.step,
        "restored_1_vs_saved": max_diff(on_one, saved),
        "restored_1_devices": sorted(
            {str(d) for x in jax.tree.leaves(on_one) for d in x.devices()}
        ),
    }


def process(dataset: Path, workdir: Path, process_id: int, port: int) -> dict:
    from helpers import tiny_config

    config = tiny_config(num_steps=3, eval_every=3, checkpoint_every=3).override(
        [
            "mesh.distributed=true",
            f"mesh.coordinator_address=127.0.0.1:{port}",
            "mesh.num_processes=2",
            f"mesh.process_id={process_id}",
        ]
    )
    summary = train(config, dataset, workdir)
    return {"process": jax.process_index(), "devices": jax.device_count(), "step": summary["step"]}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    mode, dataset, workdir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    jax.config.update("jax_num_cpu_devices", 8 if mode == "eight" else 2)
    from jax_musicvae.train import train

    if mode == "eight":
        result = eight_devices(dataset, workdir)
    else:
        result = process(dataset, workdir, int(sys.argv[4]), int(sys.argv[5]))
    print(json.dumps(result))
