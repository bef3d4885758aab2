"""Every parity check for every combination, as pytest cases (CPU).

The default run checks a smoke set that covers both cells, both wirings, every
conditioning, the flat decoder, the encoder's chunk readout and the rhythm decoder; the rest of the
matrix is marked slow (run by `.ci/run` and `pytest -m slow`).
"""

from __future__ import annotations

import numpy as np
import pytest

from jax_musicvae import parity as suite

COMBINATIONS = suite.combinations()
SMOKE = (
    "lstm/latent/magenta",
    "gru/decoder/original",
    "lstm/encoder/magenta-readout2",
    "gru/none/magenta-flat",
    "lstm/none/magenta-rhythm",
)
CASES = [
    pytest.param(c, id=c.name, marks=() if c.name in SMOKE else pytest.mark.slow)
    for c in COMBINATIONS
]


def test_smoke_set_covers_every_option() -> None:
    chosen = [c for c in COMBINATIONS if c.name in SMOKE]
    assert len(chosen) == len(SMOKE)
    assert {c.cell for c in chosen} == {"lstm", "gru"}
    assert {c.wiring for c in chosen} == {"original", "magenta"}
    assert {c.conditioning for c in chosen} == {"none", "encoder", "latent", "decoder"}
    assert any(c.bars == 1 for c in chosen)
    assert any(c.readout for c in chosen)
    assert any(c.rhythm for c in chosen)


@pytest.mark.parametrize("combo", CASES)
def test_combination_agrees(combo: suite.Combination) -> None:
    results = suite.run_combination(combo, "cpu")
    assert {r.check for r in results} == set(suite.CHECKS)
    failures = [
        f"{r.check} {r.combination}: {r.max_error:.3g} > {r.tolerance:.0e} ({r.detail})"
        for r in results
        if not r.passed
    ]
    assert not failures, "\n".join(failures)


def test_suite_covers_sixteen_plus_flat_readout_and_rhythm() -> None:
    names = {c.name for c in COMBINATIONS}
    assert len(names) == 22
    assert {"gru/decoder/original", "lstm/latent/magenta", "gru/none/magenta-flat"} <= names


def test_a_wrong_weight_is_caught() -> None:
    """The suite fails when the two sides differ (it is not vacuous)."""
    harness = suite.Harness(suite.Combination("gru", "decoder", "original"), "cpu")
    core = harness.params["decoder"]["core"]["l0"]
    core["b_hh"] = core["b_hh"] + np.float32(1e-3)
    failed = {r.check for r in suite.CHECK_FUNCTIONS["outputs"](harness) if not r.passed}
    assert failed == {"outputs"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm/latent/magenta", "gru/decoder/original"])
def test_flush_to_zero_keeps_parity(name: str) -> None:
    """torch with flush-to-zero (how `musicvae bench` and the torch trainer run it on
    the CPU; XLA always flushes) passes every check with the same tolerances."""
    import torch

    combo = next(c for c in COMBINATIONS if c.name == name)
    assert torch.set_flush_denormal(True), "this CPU cannot flush denormals"
    try:
        results = suite.run_combination(combo, "cpu")
    finally:
        torch.set_flush_denormal(False)
    assert {r.check for r in results} == set(suite.CHECKS)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm/latent/magenta", "gru/decoder/original"])
def test_multiply_reduce_products_keep_parity(name: str, monkeypatch) -> None:
    """Every recurrence's per-step products as a multiply and a sum (how the Flax model
    runs a W_hh of `rnn.MULTIPLY_REDUCE_BYTES` or more over a few rows, e.g.
    hierdec_mel_16bar's encoder at batch 8) pass every check with the same tolerances."""
    import jax

    from jax_musicvae import rnn

    combo = next(c for c in COMBINATIONS if c.name == name)
    monkeypatch.setattr(rnn, "MULTIPLY_REDUCE_BYTES", 0)
    assert rnn._reduces_per_step(np.zeros((1, 4, 16), np.float32), suite.BATCH, np.float32)
    jax.clear_caches()  # no trace made with the dot may be reused
    try:
        results = suite.run_combination(combo, "cpu")
    finally:
        jax.clear_caches()
    assert {r.check for r in results} == set(suite.CHECKS)
    failures = [
        f"{r.check}: {r.max_error:.3g} > {r.tolerance:.0e}" for r in results if not r.passed
    ]
    assert not failures, "\n".join(failures)
