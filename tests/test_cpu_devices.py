"""Decoding split over one CPU device per core: the rule, the device count, the same melodies."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import make_checkpoint

from jax_musicvae import cpu_devices
from jax_musicvae.bench import bench_config
from jax_musicvae.generate import TrainedModel


def fresh_python(*argv: object, **env: str) -> subprocess.CompletedProcess:
    """`python ARGV...` in a fresh interpreter (JAX not started, no XLA_FLAGS unless given)."""
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | env
    done = subprocess.run(
        [sys.executable, *map(str, argv)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_python(code: str, **env: str) -> dict:
    """`code` in a fresh interpreter; its last stdout line as JSON."""
    done = fresh_python("-c", textwrap.dedent(code), **env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_step_weights_are_counted_from_the_config():
    small = bench_config("bench_small").model  # LSTM, 2 layers of 256, melody90
    assert cpu_devices.decoding_step_weight_bytes(small) == 4 * (3 * 256 * 1024 + 256 * 90)
    gru = bench_config("bench_small_gru").model
    assert cpu_devices.decoding_step_weight_bytes(gru) == 4 * (3 * 256 * 768 + 256 * 90)
    mel = bench_config("mel_2bar_small").model  # 3 layers of 512: 21 MB
    assert cpu_devices.decoding_step_weight_bytes(mel) > cpu_devices.MAX_STEP_WEIGHT_BYTES


def test_split_rule():
    small, mel = bench_config("bench_small").model, bench_config("mel_2bar_small").model
    split = cpu_devices.decoding_split
    assert split(small, 64, 2) == 2
    assert split(small, 48, 2) == 2
    assert split(small, 64, 4) == 4
    assert split(small, 64, 3) == 2  # the most devices that divide the rows
    assert split(small, 33, 2) == 1
    assert split(small, 16, 2) == 1  # fewer than 16 rows per device
    assert split(small, 64, 1) == 1
    assert split(mel, 64, 2) == 1  # its weights exceed what a core's caches hold


def test_encoding_split_rule():
    split = cpu_devices.encoding_split
    one_layer = dataclasses.replace(bench_config("bench_small").model, encoder_layers=1)
    assert cpu_devices.encoding_step_weight_bytes(one_layer) == 4 * 2 * 256 * 1024
    assert split(one_layer, 64, 2) == 2
    assert split(one_layer, 16, 2) == 1
    assert split(bench_config("bench_small").model, 64, 2) == 1  # two layers
    assert split(bench_config("mel_2bar_small").model, 64, 2) == 1  # one layer of 512: 8 MB


def test_one_device_per_core_unless_chosen_or_started():
    code = """
        import json, os, jax
        from jax_musicvae.cpu_devices import use_one_device_per_core
        asked = use_one_device_per_core()
        print(json.dumps({"asked": asked, "devices": jax.device_count(),
                          "cores": len(os.sched_getaffinity(0))}))
    """
    fresh = run_python(code)
    assert fresh["asked"] and fresh["devices"] == fresh["cores"]
    chosen = run_python(code, XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert not chosen["asked"] and chosen["devices"] == 3
    started = run_python(code.replace("asked = ", "jax.numpy.zeros(1)\n        asked = "))
    assert not started["asked"] and started["devices"] == 1


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_split_work_gives_the_same_melodies_and_codes(tmp_path, temperature):
    path = make_checkpoint(tmp_path / "model", "none")
    code = f"""
        import json, jax
        jax.config.update("jax_num_cpu_devices", 2)
        from jax_musicvae.cpu_devices import split_devices
        from jax_musicvae.generate import TrainedModel
        model = TrainedModel.load({str(path)!r}, batch_size=32)
        tokens = model.sample(40, temperature={temperature}, seed=4)  # chunks of 32 and 8
        mu = model.encode(list(tokens[:32]), seed=1).mu
        splits = [len(split_devices(model.config, 32, work)) for work in ("decode", "encode")]
        print(json.dumps({{"tokens": tokens.tolist(), "mu": mu.tolist(), "splits": splits}}))
    """
    child = run_python(code)
    assert child["splits"] == [2, 2]
    model = TrainedModel.load(path, batch_size=32)
    tokens = model.sample(40, temperature=temperature, seed=4)
    np.testing.assert_array_equal(np.array(child["tokens"]), tokens)
    mu = model.encode(list(tokens[:32]), seed=1).mu
    np.testing.assert_allclose(np.array(child["mu"]), mu, rtol=0, atol=1e-6)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_sample_command_splits_over_the_cores(tmp_path):
    path = make_checkpoint(tmp_path / "model", "none")
    argv = ["sample", "--checkpoint", path, "--out", tmp_path / "out", "-n", "32"]
    done = fresh_python("-m", "jax_musicvae.cli", *argv)
    assert "rows split over 2 CPU devices" in done.stderr
    assert len(list((tmp_path / "out").glob("*.mid"))) == 32
