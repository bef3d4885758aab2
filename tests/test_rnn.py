"""The hand-written recurrence gradient against JAX's autodiff of the same scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_musicvae import rnn


def _problem(cell: str, directions: int, seed: int = 0):
    steps, batch, hidden = 9, 3, 6
    width = rnn.gate_count(cell) * hidden
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    w_hh = 0.6 * jax.random.normal(keys[0], (directions, hidden, width))
    b_hh = 0.6 * jax.random.normal(keys[1], (directions, width))
    b_ih = 0.6 * jax.random.normal(keys[7], (directions, width))
    x_proj = jax.random.normal(keys[2], (directions, steps, batch, width))
    carry = tuple(
        jax.random.normal(keys[3 + k], (directions, batch, hidden))
        for k in range(rnn.carry_size(cell))
    )
    output_weights = jax.random.normal(keys[6], (directions, steps, batch, hidden))
    return (w_hh, b_hh, b_ih, x_proj, carry), output_weights


def _gradients(loop, cell: str, dtype, args, output_weights):
    def loss(w_hh, b_hh, b_ih, x_proj, carry):
        final, hs = loop(cell, jnp.dtype(dtype), w_hh, b_hh, b_ih, x_proj, carry)
        # Cotangents reach both the outputs and every part of the final carry.
        return jnp.sum(hs * output_weights) + sum(jnp.sum(jnp.sin(a)) for a in final)

    return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(*args)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("directions", [1, 2])
def test_custom_gradient_matches_autodiff(cell: str, directions: int) -> None:
    args, output_weights = _problem(cell, directions)
    expected = _gradients(rnn._scan_recurrence, cell, jnp.float32, args, output_weights)
    got = _gradients(rnn.recurrence, cell, jnp.float32, args, output_weights)
    names = ["w_hh", "b_hh", "b_ih", "x_proj"] + [f"carry[{k}]" for k in range(len(args[4]))]
    for name, want, have in zip(
        names, jax.tree.leaves(expected), jax.tree.leaves(got), strict=True
    ):
        scale = 1.0 + float(jnp.max(jnp.abs(want)))
        assert float(jnp.max(jnp.abs(want - have))) <= 2e-6 * scale, name
        assert float(jnp.max(jnp.abs(want))) > 1e-3, f"{name}: gradient should not vanish"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_is_the_plain_scan(cell: str) -> None:
    args, _ = _problem(cell, 2, seed=1)
    expected = rnn._scan_recurrence(cell, jnp.dtype(jnp.float32), *args)
    got = rnn.recurrence(cell, jnp.dtype(jnp.float32), *args)
    for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(have))


def test_bfloat16_matmuls_stay_close_to_float32() -> None:
    args, output_weights = _problem("lstm", 2, seed=2)
    exact = _gradients(rnn.recurrence, "lstm", jnp.float32, args, output_weights)
    low = _gradients(rnn.recurrence, "lstm", jnp.bfloat16, args, output_weights)
    reference = _gradients(rnn._scan_recurrence, "lstm", jnp.bfloat16, args, output_weights)
    for e, lo, ref in zip(
        jax.tree.leaves(exact), jax.tree.leaves(low), jax.tree.leaves(reference), strict=True
    ):
        assert lo.dtype == jnp.float32
        scale = 1.0 + float(jnp.max(jnp.abs(e)))
        # bf16 has an 8-bit mantissa: both gradients are ~1e-2 from float32 and near each other.
        assert float(jnp.max(jnp.abs(lo - e))) <= 5e-2 * scale
        assert float(jnp.max(jnp.abs(lo - ref))) <= 5e-2 * scale


def test_autodiff_switch() -> None:
    """gradient="autodiff" (model.rnn_gradient) swaps the gradient, not the numbers."""
    args, output_weights = _problem("gru", 1, seed=3)

    def grads(gradient):
        loop = functools.partial(rnn.time_loop, gradient=gradient)
        return _gradients(loop, "gru", jnp.float32, args, output_weights)

    custom = grads("custom")
    plain = grads("autodiff")
    expected = _gradients(rnn._scan_recurrence, "gru", jnp.float32, args, output_weights)
    for p, e, c in zip(
        jax.tree.leaves(plain), jax.tree.leaves(expected), jax.tree.leaves(custom), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(e))
        np.testing.assert_allclose(np.asarray(c), np.asarray(e), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_directions_in_one_loop_or_two_agree(cell: str, monkeypatch) -> None:
    """Large recurrent weights run the directions one loop after the other: same
    outputs, same gradients as the one batched loop."""
    hidden, width = 5, rnn.gate_count(cell) * 5
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    w = {
        "w_ih": 0.5 * jax.random.normal(keys[0], (2, 4, width)),
        "w_hh": 0.5 * jax.random.normal(keys[1], (2, hidden, width)),
        "b_ih": 0.5 * jax.random.normal(keys[2], (2, width)),
        "b_hh": 0.5 * jax.random.normal(keys[3], (2, width)),
    }
    xs = jax.random.normal(keys[4], (7, 3, 4))

    def loss(w):
        h_fwd, h_bwd, outputs = rnn.run_bidirectional_layer(cell, w, xs, hidden, jnp.float32)
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(h_fwd * h_bwd)

    one_loop = jax.value_and_grad(loss)(w)
    monkeypatch.setattr(rnn, "SEQUENTIAL_DIRECTIONS_BYTES", 0)
    two_loops = jax.value_and_grad(loss)(w)
    for want, have in zip(jax.tree.leaves(one_loop), jax.tree.leaves(two_loops), strict=True):
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-6)
        assert float(jnp.max(jnp.abs(want))) > 1e-3


def test_lstm_activations_are_sigmoid_and_tanh_by_block() -> None:
    pre = 4.0 * jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4 * 7))
    i, f, g, o = jnp.split(pre, 4, axis=-1)
    expected = jnp.concatenate(
        [jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)], axis=-1
    )
    np.testing.assert_allclose(rnn.lstm_activations(pre), expected, rtol=0, atol=1e-6)


def test_add_to_every_step_gradient_is_the_sum_over_steps() -> None:
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    xs = jax.random.normal(keys[0], (5, 4, 6))
    per_row = jax.random.normal(keys[1], (4, 6))
    weights = jax.random.normal(keys[2], (5, 4, 6))

    def loss(add, xs, per_row):
        return jnp.sum(jnp.sin(add(xs, per_row)) * weights)

    plain = jax.grad(functools.partial(loss, lambda x, r: x + r[None]), argnums=(0, 1))
    custom = jax.grad(functools.partial(loss, rnn.add_to_every_step), argnums=(0, 1))
    np.testing.assert_array_equal(rnn.add_to_every_step(xs, per_row), xs + per_row[None])
    for got, want in zip(custom(xs, per_row), plain(xs, per_row), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_token_lookup_equals_the_one_hot_projection() -> None:
    depth = 11
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 7, 3), 0, depth)
    tokens = tokens.at[:, 0].set(depth)  # no token: a zero input, as the decoder's first step
    w_ih = jax.random.normal(jax.random.PRNGKey(4), (2, depth, 8))
    weights = jax.random.normal(jax.random.PRNGKey(5), (2, 7, 3, 8))

    def one_hot_projection(tokens, w):
        return rnn.project_directions(jax.nn.one_hot(tokens, depth), w, jnp.float32)

    np.testing.assert_array_equal(
        rnn.project_token_directions(tokens, w_ih, jnp.float32), one_hot_projection(tokens, w_ih)
    )

    def lookup_loss(w):
        return jnp.sum(rnn.project_token_directions(tokens, w, jnp.float32) * weights)

    lookup = jax.grad(lookup_loss)
    product = jax.grad(lambda w: jnp.sum(one_hot_projection(tokens, w) * weights))
    np.testing.assert_allclose(lookup(w_ih), product(w_ih), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("directions", [1, 2])
def test_multiply_reduce_products_agree_with_the_dot(
    cell: str, directions: int, monkeypatch
) -> None:
    """The per-step products as a multiply and a sum (large W_hh, few rows) give the
    dot's outputs and gradients; the problem's 3 rows are within the rule's bounds."""
    args, output_weights = _problem(cell, directions, seed=4)
    dot_forward = rnn.recurrence(cell, jnp.dtype(jnp.float32), *args)
    dot = _gradients(rnn.recurrence, cell, jnp.float32, args, output_weights)
    monkeypatch.setattr(rnn, "MULTIPLY_REDUCE_BYTES", 0)
    assert rnn._reduces_per_step(args[0], 3, jnp.float32)
    reduced_forward = rnn.recurrence(cell, jnp.dtype(jnp.float32), *args)
    reduced = _gradients(rnn.recurrence, cell, jnp.float32, args, output_weights)
    plain = _gradients(rnn._scan_recurrence, cell, jnp.float32, args, output_weights)
    for want, have in zip(
        jax.tree.leaves(dot_forward), jax.tree.leaves(reduced_forward), strict=True
    ):
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-6)
    for want, have, scan in zip(
        jax.tree.leaves(dot), jax.tree.leaves(reduced), jax.tree.leaves(plain), strict=True
    ):
        scale = 1.0 + float(jnp.max(jnp.abs(want)))
        assert float(jnp.max(jnp.abs(want - have))) <= 2e-6 * scale
        assert float(jnp.max(jnp.abs(scan - have))) <= 2e-6 * scale
        assert float(jnp.max(jnp.abs(want))) > 1e-3


def test_multiply_reduce_rule() -> None:
    """Only float32 products with W_hh of MULTIPLY_REDUCE_BYTES or more (one direction)
    over 2 to MULTIPLY_REDUCE_ROWS rows reduce (one row is a matrix-vector product,
    which the dot does at the memory's speed)."""
    hidden = 2048  # 64 MB a direction: hierdec_mel_16bar's encoder
    big = jax.ShapeDtypeStruct((1, hidden, 4 * hidden), jnp.float32)
    small = jax.ShapeDtypeStruct((2, 512, 2048), jnp.float32)
    assert big.shape[1] * big.shape[2] * 4 >= rnn.MULTIPLY_REDUCE_BYTES
    assert rnn._reduces_per_step(big, 8, jnp.float32)
    assert rnn._reduces_per_step(big, rnn.MULTIPLY_REDUCE_ROWS, jnp.float32)
    assert not rnn._reduces_per_step(big, 1, jnp.float32)
    assert not rnn._reduces_per_step(big, rnn.MULTIPLY_REDUCE_ROWS + 1, jnp.float32)
    assert not rnn._reduces_per_step(big, 8, jnp.bfloat16)
    assert not rnn._reduces_per_step(small, 8, jnp.float32)
