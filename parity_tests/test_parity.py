"""Every parity check for every combination, as pytest cases (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from parity_tests import suite

COMBINATIONS = suite.combinations()


@pytest.mark.parametrize("combo", COMBINATIONS, ids=[c.name for c in COMBINATIONS])
def test_combination_agrees(combo: suite.Combination) -> None:
    results = suite.run_combination(combo, "cpu")
    assert {r.check for r in results} == set(suite.CHECKS)
    failures = [
        f"{r.check} {r.combination}: {r.max_error:.3g} > {r.tolerance:.0e} ({r.detail})"
        for r in results
        if not r.passed
    ]
    assert not failures, "\n".join(failures)


def test_suite_covers_sixteen_plus_flat() -> None:
    names = {c.name for c in COMBINATIONS}
    assert len(names) == 18
    assert {"gru/decoder/original", "lstm/latent/magenta", "gru/none/magenta-flat"} <= names


def test_a_wrong_weight_is_caught() -> None:
    """The suite fails when the two sides differ (it is not vacuous)."""
    harness = suite.Harness(suite.Combination("gru", "decoder", "original"), "cpu")
    core = harness.params["decoder"]["core"]["l0"]
    core["b_hh"] = core["b_hh"] + np.float32(1e-3)
    failed = {r.check for r in suite.CHECK_FUNCTIONS["outputs"](harness) if not r.passed}
    assert failed == {"outputs"}
