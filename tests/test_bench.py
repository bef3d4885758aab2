"""Smoke test of `musicvae bench` on a tiny config: records, files and sane values (no timing)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jax_musicvae import bench
from jax_musicvae.cli import main

FIELDS = {
    "framework",
    "config",
    "mode",
    "batch",
    "examples_per_s",
    "median_step_s",
    "peak_mem_mb",
    "flops_fraction",
    "device",
    "spread",
    "compile_s",
    "speedup_vs_torch",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--config", "tiny,tiny_scheduled", "--batch", "3", "--repeats", "2"]
    argv += ["--out", str(out)]
    code = main([*argv, "--frameworks", "jax,torch", "--device", "cpu"])
    return code, out


@pytest.mark.slow
def test_writes_json_table_and_chart(run):
    code, out = run
    assert code == 0
    assert (out / "bench.md").read_text().startswith("| config | mode | batch | framework |")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_records_are_sane(run):
    _, out = run
    records = json.loads((out / "bench.json").read_text())
    cases = {(r["config"], r["framework"], r["mode"]) for r in records}
    assert cases == {
        (config, framework, mode)
        for config in ("tiny", "tiny_scheduled")
        for framework in ("jax", "torch")
        for mode in ("train", "sample")
    }
    for r in records:
        assert set(r) >= FIELDS
        assert r["batch"] == 3
        assert len(r["step_times_s"]) == 2
        assert len(r["step_page_faults"]) == 2 and min(r["step_page_faults"]) >= 0
        assert r["min_step_s"] <= r["median_step_s"] <= r["max_step_s"]
        assert r["examples_per_s"] == pytest.approx(3 / r["median_step_s"])
        assert 0 < r["flops_fraction"] < 10
        assert r["compile_s"] > 0 and r["peak_mem_mb"] >= 0 and r["retained_mb"] is not None
        assert r["resident_mb"] >= r["peak_mem_mb"]  # the weights and the runtime as well
        assert r["device"].startswith(("jax:cpu", "torch:cpu"))
        if r["framework"] == "torch":
            assert r["speedup_vs_torch"] == pytest.approx(1.0)
        assert r["torch_flush_denormal"] is True  # the default: torch flushes like XLA
        assert r["machine"] == bench.machine_info() and r["machine"]["cores"] >= 1


def test_a_step_touching_new_pages_shows_its_page_faults():
    """64 MB of fresh anonymous memory is 16,384 pages of 4 KB, each faulted in once."""
    import mmap

    def touch_new_pages() -> None:
        block = mmap.mmap(-1, 64 << 20)
        for offset in range(0, 64 << 20, 4096):
            block[offset] = 1
        block.close()

    timing = bench.Timing()
    bench._timed(lambda: None, timing, record=True)
    bench._timed(touch_new_pages, timing, record=True)
    assert len(timing.step_page_faults) == 2
    assert timing.step_page_faults[0] < 1_000
    assert timing.step_page_faults[1] >= 16_000
    record = bench.Record(
        framework="jax",
        config="tiny",
        mode="train",
        batch=3,
        examples_per_s=1.0,
        median_step_s=1.0,
        min_step_s=1.0,
        max_step_s=1.0,
        spread=0.0,
        step_times_s=timing.steps_s,
        step_page_faults=timing.step_page_faults,
        compile_s=1.0,
        peak_mem_mb=1.0,
        peak_rss_mb=1.0,
        flops_per_step=1.0,
        achieved_flops=1.0,
        flops_fraction=0.5,
        matmul_peak_flops=2.0,
        device="jax:cpu",
        load_avg=(0.0, 0.0, 0.0),
    )
    header, _, row = bench.markdown_table([record]).splitlines()
    column = header.split(" | ").index("most faults")
    assert row.split(" | ")[column] == f"{timing.step_page_faults[1] / 1000:.0f}k"
    noted = dataclasses.replace(record, notes="rows split over 2 CPU devices, one per core")
    assert bench.markdown_table([noted]).splitlines()[3:] == [
        "",
        "- tiny train B=3 jax: rows split over 2 CPU devices, one per core",
    ]


def test_flop_count_matches_hand_count():
    """bench_small forward: encoder 74.7, core 37.4, output 0.75 GFLOP per 64 examples."""
    c = bench.bench_config("bench_small").model
    encoder = 2 * 2 * 64 * 256 * (90 + 256) * 1024 + 2 * 2 * 64 * 256 * (512 + 256) * 1024
    core = 2 * 1024 * 16 * (346 + 256) * 1024 + 2 * 1024 * 16 * (256 + 256) * 1024
    conductor = 2 * 64 * 16 * (1 + 256) * 1024 + 2 * 64 * 16 * (256 + 256) * 1024
    dense = 2 * 64 * 512 * 128 * 2 + 2 * 64 * 128 * 1024 + 2 * 1024 * 256 * 1024
    output = 2 * 64 * 256 * 256 * 90
    forward = encoder + core + conductor + dense + output
    assert bench.flop_count(c, 64, "train") == 3 * forward
    assert bench.flop_count(c, 64, "sample") == forward - encoder - 2 * 64 * 512 * 128 * 2


def test_inputs_carry_the_noise_the_config_needs():
    """Scheduled sampling needs choice and Gumbel noise, token dropout its mask; both
    frameworks get the same arrays."""
    scheduled = bench.bench_config("tiny_scheduled")
    assert scheduled.sampling.schedule == "constant" and scheduled.sampling.rate == 0.5
    inputs = bench.make_inputs(scheduled.model, 4, 0, scheduled.sampling)
    steps = scheduled.model.sequence_length
    assert inputs.choose_noise.shape == (4, steps)
    assert inputs.gumbel.shape == (4, steps, scheduled.model.input_depth)
    assert inputs.token_keep is None
    plain = bench.bench_config("tiny")
    assert bench.make_inputs(plain.model, 4, 0, plain.sampling).gumbel is None
    dropout = bench.bench_config("cpu_small").sampling
    keep = bench.make_inputs(plain.model, 400, 0, dropout).token_keep
    assert abs(float(keep.mean()) - (1.0 - dropout.token_dropout)) < 0.05
    assert bench.make_inputs(plain.model, 4, 0, plain.sampling, plain.loss).attribute is None
    regularised = bench.bench_config("cpu_small")  # sign loss, decorrelation, adversary
    assert regularised.loss.uses_attribute
    attribute = bench.make_inputs(regularised.model, 400, 0, None, regularised.loss).attribute
    assert attribute.shape == (400,) and abs(float(attribute.std()) - 1.0) < 0.1


def test_unknown_config_and_framework_fail_cleanly(tmp_path):
    assert main(["bench", "--config", "nope", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--config", "tiny", "--frameworks", "mxnet", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--config", "tiny", "--warmup", "-1", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "bench.json").exists()


def test_cudnn_weight_packing_matches_the_scan():
    """The GPU-only cuDNN path's flat weights, run through jax's CPU reference LSTM."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn as cudnn_rnn

    from jax_musicvae import rnn

    stack = rnn.StackWeights(5, 7, 2, "lstm", bidirectional=True).apply(
        rnn.StackWeights(5, 7, 2, "lstm", bidirectional=True).init(jax.random.key(0))
    )
    xs = jax.random.normal(jax.random.key(1), (3, 6, 5))
    expected = rnn.run_bidirectional_stack("lstm", stack, xs, 7, jnp.float32)[:2]
    unpacked = cudnn_rnn.unpack_lstm_weights(rnn.pack_cudnn_weights(stack), 5, 7, 2, True)
    zeros = jnp.zeros((4, 3, 7))
    lengths = jnp.full((3,), 6, jnp.int32)
    _, h_n, _ = cudnn_rnn.lstm_ref(xs, zeros, zeros, *unpacked, lengths, 5, 7, 2, 0.0, True)
    for got, want in zip((h_n[-2], h_n[-1]), expected, strict=True):
        assert jnp.allclose(got, want, atol=1e-6)


def test_machine_info_names_the_cpu_and_its_vector_extensions():
    info = bench.machine_info()
    assert info["cpu"] and info["cores"] >= 1
    assert set(info["vector_extensions"]) <= set(bench.VECTOR_FLAGS)


def test_matmul_peak_reports_both_frameworks():
    import jax

    peaks = bench.measure_matmul_peak(jax.devices("cpu")[0], sizes=(64, 128), repeats=2)
    assert peaks["jax"] > 0 and peaks["torch"] > 0
    assert peaks["best"] == max(peaks["jax"], peaks["torch"])
