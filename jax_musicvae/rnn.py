"""LSTM and GRU recurrences with torch's exact equations, as pure functions.

Weights are fused in torch's gate order (LSTM i|f|g|o, GRU r|z|n) and stored
transposed (`w_ih [in, G*H]`, `w_hh [H, G*H]`), so converting a torch state dict
is a transpose. The input projection of a whole sequence is one matmul outside
the time loop (row lookups for token ids), only `h @ w_hh` runs per step, and the
gradient is hand-written (`recurrence`): its backward loop carries only dh/dc,
and dW_hh is one contraction over all steps after it. The loops keep
direction-major [D, T, B, .] arrays and write each step's activations, then its
gate gradients, over the projected input in place, so training holds one
[D, T, B, G*H] array per layer. The two directions of a bidirectional layer share
one input projection and one loop, except where a direction's W_hh is large: then
they run one loop after the other, as torch does, so each loop keeps its one W_hh
in cache; where it is larger than the CPU's cache and the rows are few, each step's
product runs as a multiply and a sum rather than a dot (`MULTIPLY_REDUCE_BYTES`). On
a GPU the bidirectional LSTM encoder can run as jax.experimental.rnn's cuDNN kernel
instead (opt-in). Measured speed and memory effects of these choices:
docs/benchmarks.md.

A carry is a tuple: `(h, c)` for an LSTM layer, `(h,)` for a GRU layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
Carry = tuple[jax.Array, ...]


def gate_count(cell: str) -> int:
    return 4 if cell == "lstm" else 3


def carry_size(cell: str) -> int:
    """Number of [B, H] arrays in one layer's state."""
    return 2 if cell == "lstm" else 1


def torch_uniform(bound: float):
    """torch's default RNN/Linear init, U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def matmul(x: jax.Array, w: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """x @ w computed in `dtype` (e.g. bf16) with a float32 result."""
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


class CellWeights(nn.Module):
    """Creates one layer's fused weights and returns them for the pure recurrences.

    A bidirectional layer keeps its two directions stacked on a leading axis (forward,
    backward), the layout its loop computes with: stacking them at every step instead
    copied the weights, and sliced the gradients apart again (0.5 GB each in the paper
    configuration).
    """

    input_size: int
    hidden: int
    cell: str
    bidirectional: bool = False

    @nn.compact
    def __call__(self) -> Params:
        width = gate_count(self.cell) * self.hidden
        init = torch_uniform(1.0 / math.sqrt(self.hidden))
        lead = (2,) if self.bidirectional else ()
        return {
            "w_ih": self.param("w_ih", init, (*lead, self.input_size, width)),
            "w_hh": self.param("w_hh", init, (*lead, self.hidden, width)),
            "b_ih": self.param("b_ih", init, (*lead, width)),
            "b_hh": self.param("b_hh", init, (*lead, width)),
        }


class StackWeights(nn.Module):
    """Weights of a stack of layers `l{k}`: `{"uni": weights}` per layer, or if
    bidirectional the layer's weights with the directions on a leading axis of 2."""

    input_size: int
    hidden: int
    layers: int
    cell: str
    bidirectional: bool = False

    @nn.compact
    def __call__(self) -> list[dict[str, Params]]:
        stack = []
        width = 2 * self.hidden if self.bidirectional else self.hidden
        for k in range(self.layers):
            in_size = self.input_size if k == 0 else width
            if self.bidirectional:
                stack.append(CellWeights(in_size, self.hidden, self.cell, True, name=f"l{k}")())
            else:
                stack.append({"uni": CellWeights(in_size, self.hidden, self.cell, name=f"l{k}")()})
        return stack


def zero_carry(cell: str, batch: int, hidden: int) -> Carry:
    return tuple(jnp.zeros((batch, hidden), jnp.float32) for _ in range(carry_size(cell)))


def carries_from_vector(cell: str, vector: jax.Array, layers: int, hidden: int) -> list[Carry]:
    """Split [B, layers*k*H] into per-layer carries: layer 0 (h, c), layer 1 (h, c), ..."""
    k = carry_size(cell)
    chunks = jnp.split(vector, layers * k, axis=-1)
    return [tuple(chunks[layer * k : (layer + 1) * k]) for layer in range(layers)]


def input_projection(p: Params, xs: jax.Array, dtype: jnp.dtype) -> jax.Array:
    return matmul(xs, p["w_ih"], dtype) + p["b_ih"]


def project_directions(xs: jax.Array, w_ih: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """x W_ih for D directions at once, xs [D, T, B, in], w_ih [D, in, G*H]: one
    [D, T*B, in] x [D, in, G*H] product, so the result comes out direction-major
    [D, T, B, G*H], the layout the recurrence keeps (projected as [T, B, in] x
    [in, G*H] and given its direction axis after, an LSTM layer's forward and
    backward pass took 16% longer; docs/benchmarks.md)."""
    directions, steps, batch = xs.shape[:3]
    return jnp.einsum(
        "dni,dig->dng",
        xs.reshape(directions, steps * batch, -1).astype(dtype),
        w_ih.astype(dtype),
        preferred_element_type=jnp.float32,
    ).reshape(directions, steps, batch, -1)


def lstm_activations(pre: jax.Array) -> jax.Array:
    """sigmoid on the i, f, o blocks and tanh on the g block of pre-activations [..., 4H].

    One elementwise pass over the fused width, tanh(x) = 2 sigmoid(2x) - 1 (within
    3e-7 of tanh), so a step's activations come out as the one array the gradient
    saves: computed block by block and concatenated, each step of the loops ran
    four activation kernels and a copy (docs/benchmarks.md, session 17).
    """
    blocks = pre.reshape(*pre.shape[:-1], 4, -1)
    scale = jnp.array([1.0, 1.0, 2.0, 1.0], pre.dtype)[:, None]
    return (jax.nn.sigmoid(blocks * scale) * scale - (scale - 1.0)).reshape(pre.shape)


def project_token_directions(tokens: jax.Array, w_ih: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """`project_directions` of one-hot inputs given as token ids [D, T, B]: row lookups
    of w_ih [D, V, G*H] in the compute dtype, equal to the one-hots' product in it; an
    id outside [0, V) reads zeros, as an all-zero one-hot would. Its gradient for w_ih
    is still the one-hots' product with the projection's gradient (the transpose of a
    lookup, a scatter-add, is slow on the CPU); the lookup saves the forward matmul
    (bench_small, B = 64: 59 ms -> 13 ms; docs/benchmarks.md, session 17)."""
    return _token_rows(tokens, w_ih.astype(dtype).astype(jnp.float32))


@jax.custom_vjp
def _token_rows(tokens: jax.Array, w_ih: jax.Array) -> jax.Array:
    return jax.vmap(lambda w, t: jnp.take(w, t, axis=0, mode="fill", fill_value=0))(w_ih, tokens)


def _token_rows_fwd(tokens: jax.Array, w_ih: jax.Array) -> tuple[jax.Array, tuple]:
    return _token_rows(tokens, w_ih), (tokens, w_ih.shape[1])


def _token_rows_bwd(saved: tuple, d_proj: jax.Array) -> tuple[None, jax.Array]:
    tokens, depth = saved
    directions = tokens.shape[0]
    one_hot = jax.nn.one_hot(tokens.reshape(directions, -1), depth, dtype=d_proj.dtype)
    rows = d_proj.reshape(directions, -1, d_proj.shape[-1])
    return None, jnp.einsum("dnv,dng->dvg", one_hot, rows)


_token_rows.defvjp(_token_rows_fwd, _token_rows_bwd)


def gate_activations(
    cell: str, x_proj: jax.Array, h_proj: jax.Array, carry: Carry
) -> tuple[Carry, tuple[jax.Array, jax.Array]]:
    """The elementwise part of a step, given x W_ih + b_ih and h W_hh + b_hh.

    Returns the new carry and what the hand-written gradient saves of the step: the
    gate activations [..., G*H] (LSTM i|f|g|o, GRU r|z|n) and one H-wide array (LSTM:
    c, GRU: h W_hn + b_hn); other callers drop them.
    """
    if cell == "lstm":
        acts = lstm_activations(x_proj + h_proj)
        i, f, g, o = jnp.split(acts, 4, axis=-1)
        c = f * carry[1] + i * g
        return (o * jnp.tanh(c), c), (acts, c)
    x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return ((1.0 - z) * n + z * carry[0],), (jnp.concatenate([r, z, n], axis=-1), h_n)


def gates(cell: str, x_proj: jax.Array, h_proj: jax.Array, carry: Carry) -> Carry:
    """The new carry of one step (see `gate_activations`)."""
    return gate_activations(cell, x_proj, h_proj, carry)[0]


def _lstm_gate_gradients(
    acts: jax.Array,
    c_before: jax.Array,
    tanh_c: jax.Array,
    dh: jax.Array,
    dc_next: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """d(pre-activation gates i|f|g|o) of one LSTM step and dc_{t-1}, from its activations.

    Each block is (what multiplies the gate) x (the activation's slope): i: dc g, f: dc
    c_{t-1}, g: dc i, o: dh tanh c_t; computed over the fused width at once, like
    `lstm_activations`.
    """
    blocks = acts.reshape(*acts.shape[:-1], 4, -1)
    i, f, g, o = (blocks[..., k, :] for k in range(4))
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
    upstream = jnp.stack([dc * g, dc * c_before, dc * i, dh * tanh_c], axis=-2)
    is_g = (jnp.arange(4) == 2)[:, None]
    slope = jnp.where(is_g, 1.0 - blocks * blocks, blocks * (1.0 - blocks))
    return (upstream * slope).reshape(acts.shape), dc * f


def _gru_gate_gradients(
    acts: tuple[jax.Array, ...], h_before: jax.Array, dh: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dr, dz, dn) of one GRU step's pre-activations (dn before the r * h_n product)."""
    r, z, n, h_n = acts
    dz = dh * (h_before - n) * z * (1.0 - z)
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dr = dn * h_n * r * (1.0 - r)
    return dr, dz, dn


def cell_step(cell: str, p: Params, x_proj: jax.Array, carry: Carry, dtype: jnp.dtype) -> Carry:
    """One time step given the already projected input x W_ih + b_ih (loops that are
    not differentiated: generation, scheduled sampling's sampling pass)."""
    return gates(cell, x_proj, matmul(carry[0], p["w_hh"], dtype) + p["b_hh"], carry)


@jax.custom_vjp
def add_to_every_step(xs: jax.Array, per_row: jax.Array) -> jax.Array:
    """xs [T, N, G] + per_row [N, G] at every step t.

    Its gradient for per_row, the sum over T, is a product with a vector of ones:
    XLA:CPU hands the plain sum over the leading axis to YNNPACK, which took 165-185
    ms for the decoder's [16, 1024, 1024] (bench_small, B = 64) where the product
    takes 4 ms (docs/benchmarks.md, session 17).
    """
    return xs + per_row[None]


def _add_to_every_step_fwd(xs: jax.Array, per_row: jax.Array) -> tuple[jax.Array, None]:
    return add_to_every_step(xs, per_row), None


def _add_to_every_step_bwd(_: None, d_sum: jax.Array) -> tuple[jax.Array, jax.Array]:
    ones = jnp.ones(d_sum.shape[0], d_sum.dtype)
    return d_sum, jnp.einsum("t,tng->ng", ones, d_sum)


add_to_every_step.defvjp(_add_to_every_step_fwd, _add_to_every_step_bwd)


MULTIPLY_REDUCE_BYTES = 48 << 20
"""Per-step products with a W_hh (one direction's) at least this large and 2 to
MULTIPLY_REDUCE_ROWS rows run as a multiply and a sum over W_hh's contiguous axis
instead of a dot (`_hidden_projection`, `_recurrence_bwd`). With W_hh larger than the
cache and a few rows, XLA's dot kernels read it at a third of the memory's speed
(hierdec_mel_16bar's encoder, 64 MB, 8 rows: 4.6 ms a product, the reduction 2.5 ms);
within a layer a 16 MB W_hh gained nothing (docs/benchmarks.md, "Session 22")."""
MULTIPLY_REDUCE_ROWS = 32


def _reduces_per_step(w_hh: jax.Array, rows: int, dtype: jnp.dtype) -> bool:
    """Whether the per-step products with w_hh [D, H, G*H] over `rows` rows reduce (on
    the CPU only: measured there)."""
    return (
        jax.default_backend() == "cpu"
        and jnp.dtype(dtype) == jnp.float32
        and 2 <= rows <= MULTIPLY_REDUCE_ROWS
        and math.prod(w_hh.shape[1:]) * jnp.dtype(w_hh.dtype).itemsize >= MULTIPLY_REDUCE_BYTES
    )


def _step_weights(w_hh: jax.Array, rows: int, dtype: jnp.dtype) -> tuple[jax.Array, bool]:
    """W_hh as the loop's per-step product reads it, cast once: [D, H, G*H] for a dot,
    or transposed to [D, G*H, H] for a multiply-reduce; and whether it reduces."""
    if _reduces_per_step(w_hh, rows, dtype):
        return jnp.swapaxes(w_hh, 1, 2), True
    return w_hh.astype(dtype), False


def _multiply_reduce(x: jax.Array, w: jax.Array) -> jax.Array:
    """x w^T for x [D, B, K] and w [D, N, K] as a product and a sum over K, per
    direction: with a leading direction axis XLA:CPU's fused reduction ran 40x slower."""
    return jnp.stack([jnp.sum(w[d][None] * x[d][:, None, :], axis=-1) for d in range(len(w))])


def _hidden_projection(
    h: jax.Array, w: jax.Array, b_hh: jax.Array, dtype: jnp.dtype, reduce: bool
) -> jax.Array:
    """h W_hh + b_hh for D layers at once: h [D, B, H], b_hh [D, G*H] and w from
    `_step_weights` (w_hh [D, H, G*H], or its transpose where `reduce`)."""
    if reduce:
        h_w = _multiply_reduce(h, w)
    else:
        h_w = jnp.einsum("dbh,dhg->dbg", h.astype(dtype), w, preferred_element_type=jnp.float32)
    return h_w + b_hh[:, None, :]


def _scan_recurrence(
    cell: str,
    dtype: jnp.dtype,
    w_hh: jax.Array,
    b_hh: jax.Array,
    b_ih: jax.Array,
    x_proj: jax.Array,
    carry: Carry,
) -> tuple[Carry, jax.Array]:
    """The time loop of D independent layers (directions) sharing the batch.

    x_proj [D, T, B, G*H] is x W_ih (b_ih [D, G*H] is added per step, so no biased
    copy of x_proj exists), w_hh [D, H, G*H], b_hh [D, G*H], carry arrays [D, B, H].
    Returns (final carry, hs [D, T, B, H]). Differentiated by XLA's autodiff of
    `lax.scan` (over time-major copies of x_proj and hs).
    """
    w, reduce = _step_weights(w_hh, carry[0].shape[1], dtype)

    def step(carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
        h_proj = _hidden_projection(carry[0], w, b_hh, dtype, reduce)
        carry = gates(cell, x_t + b_ih[:, None, :], h_proj, carry)
        return carry, carry[0]

    carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(x_proj, 0, 1))
    return carry, jnp.swapaxes(hs, 0, 1)


def _at(a: jax.Array, t: jax.Array) -> jax.Array:
    """a[:, t] of a direction-major [D, T, ...] array."""
    return jax.lax.dynamic_index_in_dim(a, t, 1, keepdims=False)


def _put(a: jax.Array, value: jax.Array, t: jax.Array) -> jax.Array:
    """a with a[:, t] = value (in place inside a loop)."""
    return jax.lax.dynamic_update_index_in_dim(a, value, t, 1)


def _time_buffer(like: jax.Array, steps: int) -> jax.Array:
    """A [D, T, ...] buffer for per-step values shaped like `like` [D, ...]."""
    return jnp.zeros((like.shape[0], steps, *like.shape[1:]), like.dtype)


# Saved by the forward pass: w_hh, the initial carry, hs [D, T, B, H], the gate
# activations [D, T, B, G*H] (LSTM i|f|g|o, GRU r|z|n; written over x_proj), and
# LSTM: c [D, T, B, H] / GRU: h W_hn + b_hn [D, T, B, H].
Residuals = tuple[jax.Array, Carry, jax.Array, jax.Array, jax.Array]


def _recurrence_fwd(
    cell: str,
    dtype: jnp.dtype,
    w_hh: jax.Array,
    b_hh: jax.Array,
    b_ih: jax.Array,
    x_proj: jax.Array,
    carry: Carry,
) -> tuple[tuple[Carry, jax.Array], Residuals]:
    """Forward pass saving only what the backward step needs. The loop runs over axis 1
    of direction-major arrays, so every array keeps the layout the matmuls outside the
    loop read ([D, T*B, .] after a free reshape); step t's activations overwrite x_proj
    at t, which no later step reads, so they need no buffer of their own.

    Each step reads the *next* step's input after its own write, from the updated
    buffer, and carries it: the write is then the only use of the buffer a step
    receives, so XLA updates it in place. (Read and written in the same step, XLA
    copied the whole buffer every step: 4x slower.)"""
    w, reduce = _step_weights(w_hh, carry[0].shape[1], dtype)
    steps = x_proj.shape[1]
    hs, extra = _time_buffer(carry[0], steps), _time_buffer(carry[0], steps)

    def body(t, loop):
        carry, x_t, acts, hs, extra = loop
        h_proj = _hidden_projection(carry[0], w, b_hh, dtype, reduce)
        carry, (acts_t, extra_t) = gate_activations(cell, x_t + b_ih[:, None, :], h_proj, carry)
        acts = _put(acts, acts_t, t)
        x_next = _at(acts, jnp.minimum(t + 1, steps - 1))
        return carry, x_next, acts, _put(hs, carry[0], t), _put(extra, extra_t, t)

    final, _, acts, hs, extra = jax.lax.fori_loop(
        0, steps, body, (carry, _at(x_proj, 0), x_proj, hs, extra)
    )
    return (final, hs), (w_hh, carry, hs, acts, extra)


def _recurrence_bwd(
    cell: str,
    dtype: jnp.dtype,
    residuals: Residuals,
    cotangents: tuple[Carry, jax.Array],
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, Carry]:
    """Only the dh/dc recurrence runs per step, writing step t's gate gradients over its
    saved activations; dW_hh, db_hh and db_ih are contractions over all T*B rows after
    the loop, and the gate gradients are x_proj's gradient."""
    w_hh, carry0, hs, acts, extra = residuals
    d_final, d_hs = cotangents
    steps = hs.shape[1]
    if _reduces_per_step(w_hh, hs.shape[2], dtype):

        def back_h(d_gates_h: jax.Array) -> jax.Array:
            return _multiply_reduce(d_gates_h, w_hh)

    else:
        w_t = jnp.swapaxes(w_hh, 1, 2).astype(dtype)  # [D, G*H, H]

        def back_h(d_gates_h: jax.Array) -> jax.Array:
            return jnp.einsum(
                "dbg,dgh->dbh", d_gates_h.astype(dtype), w_t, preferred_element_type=jnp.float32
            )

    def before(values: jax.Array, first: jax.Array, t: jax.Array) -> jax.Array:
        """values[:, t - 1], or the initial `first` at t = 0."""
        return jnp.where(t == 0, first, _at(values, jnp.maximum(t - 1, 0)))

    if cell == "lstm":

        def body(k, loop):
            dh_rec, dc_next, acts_t, grads = loop
            t = steps - 1 - k
            c_before = before(extra, carry0[1], t)
            dh = _at(d_hs, t) + dh_rec
            tanh_c = jnp.tanh(_at(extra, t))
            d_gates, dc_before = _lstm_gate_gradients(acts_t, c_before, tanh_c, dh, dc_next)
            grads = _put(grads, d_gates, t)
            return back_h(d_gates), dc_before, _at(grads, jnp.maximum(t - 1, 0)), grads

        dh0, dc0, _, d_x_proj = jax.lax.fori_loop(
            0, steps, body, (*d_final, _at(acts, steps - 1), acts)
        )
        d_carry0, d_gates_h = (dh0, dc0), d_x_proj
    else:

        def body(k, loop):
            dh_rec, acts_t, h_n, grads, grads_n = loop
            t = steps - 1 - k
            r, z, n = jnp.split(acts_t, 3, axis=-1)
            dh = _at(d_hs, t) + dh_rec
            dr, dz, dn = _gru_gate_gradients((r, z, n, h_n), before(hs, carry0[0], t), dh)
            d_h = back_h(jnp.concatenate([dr, dz, dn * r], axis=-1))
            # Step t's gradients go over its activations (d x_proj = dr|dz|dn) and over
            # its h W_hn + b_hn (dn * r, the n block of d(h W_hh)).
            grads = _put(grads, jnp.concatenate([dr, dz, dn], axis=-1), t)
            grads_n = _put(grads_n, dn * r, t)
            t_next = jnp.maximum(t - 1, 0)
            return dh * z + d_h, _at(grads, t_next), _at(grads_n, t_next), grads, grads_n

        last = steps - 1
        dh0, _, _, d_x_proj, d_n = jax.lax.fori_loop(
            0, steps, body, (d_final[0], _at(acts, last), _at(extra, last), acts, extra)
        )
        d_carry0 = (dh0,)
        hidden = d_n.shape[-1]
        d_gates_h = jnp.concatenate([d_x_proj[..., : 2 * hidden], d_n], axis=-1)
    h_prev = jnp.concatenate([carry0[0][:, None], hs[:, :-1]], axis=1)
    rows = d_gates_h.shape[0], -1, d_gates_h.shape[-1]  # [D, T*B, G*H]: a free reshape
    d_gates_rows = d_gates_h.reshape(rows)
    d_w_hh = jnp.einsum(
        "dnh,dng->dhg",
        h_prev.reshape(*rows[:2], h_prev.shape[-1]).astype(dtype),
        d_gates_rows.astype(dtype),
        preferred_element_type=jnp.float32,
    )
    d_b_ih = d_x_proj.reshape(rows[0], -1, d_x_proj.shape[-1]).sum(axis=1)
    return d_w_hh, d_gates_rows.sum(axis=1), d_b_ih, d_x_proj, d_carry0


recurrence = jax.custom_vjp(_scan_recurrence, nondiff_argnums=(0, 1))
recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
recurrence.__doc__ = """_scan_recurrence with a hand-written gradient (docs/benchmarks.md).

XLA's autodiff of the scan adds h_{t-1}^T dgates_t into dW_hh at every step
and keeps its own residual set; here the backward loop runs only dh/dc and
dW_hh is one [H, T*B] x [T*B, G*H] contraction after it. `gradient="autodiff"`
(`model.rnn_gradient`) differentiates the scan instead (for A/B benchmarks and tests).
"""


def time_loop(
    cell: str,
    dtype: jnp.dtype,
    w_hh: jax.Array,
    b_hh: jax.Array,
    b_ih: jax.Array,
    x_proj: jax.Array,
    carry: Carry,
    gradient: str = "custom",
) -> tuple[Carry, jax.Array]:
    """The recurrence used by the teacher-forced paths (see `recurrence`)."""
    loop = _scan_recurrence if gradient == "autodiff" else recurrence
    return loop(cell, jnp.dtype(dtype), w_hh, b_hh, b_ih, x_proj, carry)


def run_layer(
    cell: str,
    p: Params,
    xs: jax.Array,
    carry: Carry,
    dtype: jnp.dtype,
    projected: bool = False,
    gradient: str = "custom",
) -> tuple[Carry, jax.Array]:
    """Run one layer over time-major xs [T, B, in]; returns (final carry, outputs [T, B, H]).

    With `projected`, xs is already x W_ih + b_ih [T, B, G*H].
    """
    if projected:
        x_proj, b_ih = xs[None], jnp.zeros_like(p["b_ih"])
    else:
        x_proj, b_ih = project_directions(xs[None], p["w_ih"][None], dtype), p["b_ih"]
    carry, ys = time_loop(
        cell,
        dtype,
        p["w_hh"][None],
        p["b_hh"][None],
        b_ih[None],
        x_proj,
        tuple(a[None] for a in carry),
        gradient,
    )
    return tuple(a[0] for a in carry), ys[0]


def dropout_keep(key: jax.Array, layer: int, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Where the dropout before stacked layer `layer` keeps its input (True)."""
    return jax.random.bernoulli(jax.random.fold_in(key, layer), 1.0 - rate, shape)


def apply_dropout(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout with a given mask."""
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def layer_input(x: jax.Array, layer: int, rate: float, key: jax.Array | None) -> jax.Array:
    """Dropout between stacked layers (torch's nn.LSTM rule): none before layer 0."""
    if layer == 0 or key is None or rate == 0.0:
        return x
    return apply_dropout(x, dropout_keep(key, layer, rate, x.shape), rate)


def run_stack(
    cell: str,
    stack: Sequence[dict[str, Params]],
    xs: jax.Array,
    carries: Sequence[Carry],
    dtype: jnp.dtype,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    projected: bool = False,
    time_major: bool = False,
    gradient: str = "custom",
) -> tuple[list[Carry], jax.Array]:
    """A unidirectional stack over a whole sequence, layer by layer.

    xs is [B, T, in], or [T, B, in] with `time_major` (the outputs follow suit); the
    layers run time-major either way. With `projected`, xs is layer 0's input already
    multiplied by its W_ih (plus b_ih).
    """
    finals = []
    if not time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    for k, layer in enumerate(stack):
        xs = layer_input(xs, k, dropout_rate, dropout_key)
        carry, xs = run_layer(
            cell,
            layer["uni"],
            xs,
            carries[k],
            dtype,
            projected=projected and k == 0,
            gradient=gradient,
        )
        finals.append(carry)
    return finals, xs if time_major else jnp.swapaxes(xs, 0, 1)


SEQUENTIAL_DIRECTIONS_BYTES = 16 << 20
"""A bidirectional layer's directions run one loop after the other where one direction's
W_hh is at least this large (4 MB at bench_small: one loop; 64 MB at hierdec_mel_16bar:
two)."""


def run_bidirectional_layer(
    cell: str,
    w: Params,
    xs: jax.Array,
    hidden: int,
    dtype: jnp.dtype,
    gradient: str = "custom",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Both directions of one layer over time-major xs [T, B, in], or over the one-hots
    of token ids xs [T, B] (projected by row lookups, `project_token_directions`).

    The weights w hold (fwd, bwd) on a leading axis of 2 and the backward input is
    flipped in time, so both directions' inputs are projected by one batched matmul:
    the input is flipped before its projection (it is narrower than G*H), and the
    projection comes out as [2, T*B, G*H], the direction-major layout the recurrence
    keeps, so nothing wide is transposed. The recurrences run as one loop of
    [2, B, H] x [2, H, G*H] steps, or, where one direction's W_hh has
    SEQUENTIAL_DIRECTIONS_BYTES or more, as two loops one after the other: a loop that
    reads one such W_hh at every step keeps it in cache, one that reads both does not
    (hierdec_mel_16bar's training step 18-20% faster; bench_small's, whose W_hh is 4
    MB, within +-7% either way; docs/benchmarks.md).
    Returns (h_fwd, h_bwd, outputs [T, B, 2H]).
    """
    batch = xs.shape[1]
    # [2, T, B, G*H]; b_ih is added inside the loop
    both = jnp.stack([xs, jnp.flip(xs, axis=0)])
    if jnp.issubdtype(xs.dtype, jnp.integer):
        proj = project_token_directions(both, w["w_ih"], dtype)
    else:
        proj = project_directions(both, w["w_ih"], dtype)
    if w["w_hh"][0].size * jnp.dtype(dtype).itemsize < SEQUENTIAL_DIRECTIONS_BYTES:
        carry = tuple(a.reshape(2, batch, hidden) for a in zero_carry(cell, 2 * batch, hidden))
        carry, ys = time_loop(
            cell, dtype, w["w_hh"], w["b_hh"], w["b_ih"], proj, carry, gradient
        )  # ys [2, T, B, H]
        h_fwd, h_bwd = carry[0]
    else:
        zero = tuple(a[None] for a in zero_carry(cell, batch, hidden))  # [1, B, H]
        (fwd_carry, fwd_ys), (bwd_carry, bwd_ys) = (
            time_loop(
                cell,
                dtype,
                w["w_hh"][d : d + 1],
                w["b_hh"][d : d + 1],
                w["b_ih"][d : d + 1],
                proj[d : d + 1],
                zero,
                gradient,
            )
            for d in range(2)
        )
        ys = jnp.concatenate([fwd_ys, bwd_ys])
        h_fwd, h_bwd = fwd_carry[0][0], bwd_carry[0][0]
    outputs = jnp.concatenate([ys[0], jnp.flip(ys[1], axis=0)], axis=-1)
    return h_fwd, h_bwd, outputs


def cudnn_lstm_usable(cell: str, dtype: jnp.dtype, dropout_key: jax.Array | None) -> bool:
    """Whether jax.experimental.rnn's cuDNN LSTM can replace the scan.

    It exists on NVIDIA/AMD GPUs only, for LSTMs in float32, and its dropout mask
    cannot be reproduced, so training with dropout keeps the scan. Opt-in
    (`model.cudnn_encoder`): it has not yet been run against the parity suite on a
    GPU (only its weight packing is checked, on CPU).
    """
    return (
        cell == "lstm"
        and jnp.dtype(dtype) == jnp.float32
        and dropout_key is None
        and jax.default_backend() == "gpu"
    )


def pack_cudnn_weights(stack: Sequence[Params]) -> jax.Array:
    """A bidirectional stack's weights as cuDNN's flat vector in torch's layout.

    All [G*H, in] W_ih and [G*H, H] W_hh first (layer-major, forward then backward
    direction), then all b_ih and b_hh in the same order.
    """
    weights, biases = [], []
    for p in stack:
        for d in range(2):
            weights += [p["w_ih"][d].T.reshape(-1), p["w_hh"][d].T.reshape(-1)]
            biases += [p["b_ih"][d], p["b_hh"][d]]
    return jnp.concatenate(weights + biases)


def run_bidirectional_stack_cudnn(
    stack: Sequence[Params], xs: jax.Array, hidden: int
) -> tuple[jax.Array, jax.Array]:
    """run_bidirectional_stack as one cuDNN call (float32, TF32 off: HIGHEST precision)."""
    from jax.experimental import rnn as cudnn_rnn

    batch, steps, inputs = xs.shape
    zeros = jnp.zeros((2 * len(stack), batch, hidden), jnp.float32)
    _, h_n, _ = cudnn_rnn.lstm(
        xs,
        zeros,
        zeros,
        pack_cudnn_weights(stack),
        jnp.full((batch,), steps, jnp.int32),
        inputs,
        hidden,
        len(stack),
        0.0,
        True,
        precision=jax.lax.Precision.HIGHEST,
    )
    return h_n[-2], h_n[-1]


def run_bidirectional_stack(
    cell: str,
    stack: Sequence[Params],
    xs: jax.Array,
    hidden: int,
    dtype: jnp.dtype,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    gradient: str = "custom",
    cudnn: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Bidirectional stack from zero state over xs [B, T, in] or the one-hots of token
    ids xs [B, T]: the last layer's final h (fwd, bwd) and its outputs [T, B, 2H].

    With `cudnn`, one cuDNN call where `cudnn_lstm_usable` allows it; it returns no
    outputs (None).
    """
    if cudnn and cudnn_lstm_usable(cell, dtype, dropout_key if dropout_rate else None):
        if jnp.issubdtype(xs.dtype, jnp.integer):
            xs = jax.nn.one_hot(xs, stack[0]["w_ih"].shape[-2], dtype=jnp.float32)
        return (*run_bidirectional_stack_cudnn(stack, xs, hidden), None)
    h_fwd = h_bwd = None
    xs = jnp.swapaxes(xs, 0, 1)
    for k, layer in enumerate(stack):
        xs = layer_input(xs, k, dropout_rate, dropout_key)
        h_fwd, h_bwd, xs = run_bidirectional_layer(cell, layer, xs, hidden, dtype, gradient)
    return h_fwd, h_bwd, xs


def stack_step(
    cell: str,
    stack: Sequence[dict[str, Params]],
    x: jax.Array,
    carries: Sequence[Carry],
    dtype: jnp.dtype,
    projected: bool = False,
    dropout_rate: float = 0.0,
    keeps: Sequence[jax.Array | None] | None = None,
) -> tuple[list[Carry], jax.Array]:
    """One time step through every layer of a unidirectional stack (`projected` as
    run_stack); `keeps[k]` is the dropout mask of layer k's input at this step (None
    for layer 0: the masks `run_stack` draws, sliced at this step)."""
    new = []
    for k, layer in enumerate(stack):
        if keeps is not None and keeps[k] is not None:
            x = apply_dropout(x, keeps[k], dropout_rate)
        x_proj = x if projected and k == 0 else input_projection(layer["uni"], x, dtype)
        carry = cell_step(cell, layer["uni"], x_proj, carries[k], dtype)
        new.append(carry)
        x = carry[0]
    return new, x
