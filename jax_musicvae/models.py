"""The conditioned MusicVAE as Flax (linen) modules; docs/architecture.md is the contract.

Modules own the parameters; the recurrences are pure functions from `rnn.py`
running inside `lax.scan`, so the training path has no Python loop over time or
bars: under teacher forcing and scheduled sampling all U bars of a batch are one
batch of U*B sequences of S steps once the conductor has run.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_musicvae import rnn
from jax_musicvae.config import FIRST_NOTE_ON, ModelConfig

Params = dict[str, jax.Array]


def check_shape(name: str, value: Any, shape: tuple[int | None, ...]) -> None:
    """Raise a ValueError naming the argument when its shape is wrong."""
    try:
        chex.assert_shape(value, shape)
    except AssertionError:
        dims = ", ".join("*" if d is None else str(d) for d in shape)
        raise ValueError(f"{name} has shape {tuple(jnp.shape(value))}, expected [{dims}]") from None


class DenseWeights(nn.Module):
    """A linear layer's kernel [in, out] and bias, with torch's default init."""

    input_size: int
    features: int

    @nn.compact
    def __call__(self) -> Params:
        init = rnn.torch_uniform(1.0 / math.sqrt(self.input_size))
        return {
            "kernel": self.param("kernel", init, (self.input_size, self.features)),
            "bias": self.param("bias", init, (self.features,)),
        }


def dense(p: Params, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    return rnn.matmul(x, p["kernel"], dtype) + p["bias"]


@jax.custom_vjp
def reverse_gradient(x: jax.Array) -> jax.Array:
    """Identity forward, negated gradient backward (the adversary's gradient reversal)."""
    return x


reverse_gradient.defvjp(lambda x: (x, None), lambda _, g: (-g,))


def adversary_input(z: jax.Array, head_size: int, skipped: int | None) -> jax.Array:
    """What the adversary reads: z's encoded dimensions with dimension `skipped` zeroed,
    through the gradient reversal."""
    z = z[:, :head_size]
    if skipped is not None:
        z = z * (jnp.arange(head_size) != skipped).astype(z.dtype)
    return reverse_gradient(z)


def note_ons(tokens: jax.Array) -> jax.Array:
    """[B, T] float 1 where a melody90 token starts a note: the rhythm decoder's targets."""
    return (tokens >= FIRST_NOTE_ON).astype(jnp.float32)


def note_on_flags(rhythm_logits: jax.Array) -> jax.Array:
    """The rhythm decoder's note-on flags [B, T] (1 where its logit > 0), without gradient."""
    return (jax.lax.stop_gradient(rhythm_logits) > 0).astype(jnp.float32)


def previous_token_ids(tokens: jax.Array, depth: int) -> jax.Array:
    """Tokens shifted right by one step, with `depth` (no token: zero input) at t = 0."""
    return jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)), constant_values=depth)


def _to_bars(x: jax.Array, bars: int) -> jax.Array:
    """[B, U*S, ...] -> [B*U, S, ...]."""
    b, t = x.shape[:2]
    return x.reshape(b * bars, t // bars, *x.shape[2:])


def chunk_readout(outputs: jax.Array, every: int, hidden: int) -> jax.Array:
    """[T, B, 2H] -> [B, T/every*2H]: forward output at each chunk's end, backward at its start."""
    steps, batch = outputs.shape[:2]
    chunks = outputs.reshape(steps // every, every, batch, 2 * hidden)
    ends = jnp.concatenate([chunks[:, -1, :, :hidden], chunks[:, 0, :, hidden:]], axis=-1)
    return jnp.swapaxes(ends, 0, 1).reshape(batch, -1)


class Encoder(nn.Module):
    """Bidirectional RNN over the one-hot input, then the mu and sigma heads."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.rnn = rnn.StackWeights(
            cfg.input_depth, cfg.encoder_hidden, cfg.encoder_layers, cfg.cell, bidirectional=True
        )
        self.mu = DenseWeights(cfg.readout_size, cfg.head_size)
        self.sigma = DenseWeights(cfg.readout_size, cfg.head_size)

    def __call__(
        self, tokens: jax.Array, condition: jax.Array | None, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        dtype = jnp.dtype(cfg.compute_dtype)
        key = None if deterministic or cfg.dropout == 0.0 else self.make_rng("dropout")
        h_fwd, h_bwd, outputs = rnn.run_bidirectional_stack(
            cfg.cell,
            self.rnn(),
            tokens,
            cfg.encoder_hidden,
            dtype,
            cfg.dropout,
            key,
            gradient=cfg.rnn_gradient,
            cudnn=cfg.cudnn_encoder and not cfg.encoder_readout_steps,  # cuDNN: final states only
        )
        if cfg.encoder_readout_steps:
            h = chunk_readout(outputs, cfg.encoder_readout_steps, cfg.encoder_hidden)
        else:
            h = jnp.concatenate([h_fwd, h_bwd], axis=-1)
        if cfg.conditioning == "encoder":
            h = jnp.concatenate([h, condition[:, None]], axis=-1)
        mu = dense(self.mu(), h, dtype)
        sigma = jax.nn.softplus(dense(self.sigma(), h, dtype))
        if cfg.conditioning == "latent":
            mu = jnp.concatenate([mu, condition[:, None]], axis=-1)
            fixed = jnp.full((h.shape[0], 1), cfg.latent_condition_sigma, jnp.float32)
            sigma = jnp.concatenate([sigma, fixed], axis=-1)
        return mu, sigma


class Decoder(nn.Module):
    """Hierarchical (conductor + core) or flat decoder in the `original` or `magenta` wiring."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        depth, hidden, layers = cfg.input_depth, cfg.decoder_hidden, cfg.decoder_layers
        state_size = layers * rnn.carry_size(cfg.cell) * hidden
        code = cfg.decoder_code_size
        if cfg.wiring == "original":
            self.conductor = rnn.StackWeights(code, hidden, layers, cfg.cell)
            self.conductor_embeddings = DenseWeights(hidden, cfg.latent_size)
            core_input = cfg.latent_size
        elif cfg.hierarchical:
            self.conductor = rnn.StackWeights(1, hidden, layers, cfg.cell)
            self.conductor_initial_state = DenseWeights(code, state_size)
            self.core_initial_state = DenseWeights(hidden, state_size)
            core_input = hidden
        else:
            self.core_initial_state = DenseWeights(code, state_size)
            core_input = code
        # The core reads [previous token one-hot, note-on flag (with a rhythm decoder),
        # bar context].
        core_input += depth + (1 if cfg.rhythm_hidden else 0)
        self.core = rnn.StackWeights(core_input, hidden, layers, cfg.cell)
        self.out = DenseWeights(hidden, depth)

    @property
    def _dtype(self) -> jnp.dtype:
        return jnp.dtype(self.config.compute_dtype)

    def _dropout_key(self, deterministic: bool) -> jax.Array | None:
        if deterministic or self.config.dropout == 0.0:
            return None
        return self.make_rng("dropout")

    def bar_context(
        self, z_dec: jax.Array, dropout_key: jax.Array | None
    ) -> tuple[jax.Array, list[rnn.Carry]]:
        """Per-bar embedding [B, U, E] and core initial carries (arrays [B, U, H])."""
        cfg = self.config
        batch, bars, hidden = z_dec.shape[0], cfg.num_bars, cfg.decoder_hidden
        if cfg.wiring == "original":
            inputs = jnp.broadcast_to(z_dec[:, None, :], (batch, bars, z_dec.shape[-1]))
            zeros = [rnn.zero_carry(cfg.cell, batch, hidden)] * cfg.decoder_layers
            _, top = rnn.run_stack(
                cfg.cell,
                self.conductor(),
                inputs,
                zeros,
                self._dtype,
                cfg.dropout,
                dropout_key,
                gradient=cfg.rnn_gradient,
            )
            context = jnp.tanh(dense(self.conductor_embeddings(), top, self._dtype))
            core_init = [
                rnn.zero_carry(cfg.cell, batch * bars, hidden) for _ in range(cfg.decoder_layers)
            ]
            return context, [tuple(a.reshape(batch, bars, hidden) for a in cr) for cr in core_init]
        if cfg.hierarchical:
            initial = jnp.tanh(dense(self.conductor_initial_state(), z_dec, self._dtype))
            carries = rnn.carries_from_vector(cfg.cell, initial, cfg.decoder_layers, hidden)
            inputs = jnp.zeros((batch, bars, 1), jnp.float32)
            _, context = rnn.run_stack(
                cfg.cell,
                self.conductor(),
                inputs,
                carries,
                self._dtype,
                cfg.dropout,
                dropout_key,
                gradient=cfg.rnn_gradient,
            )
        else:
            context = z_dec[:, None, :]
        core_state = jnp.tanh(dense(self.core_initial_state(), context, self._dtype))
        return context, rnn.carries_from_vector(cfg.cell, core_state, cfg.decoder_layers, hidden)

    def core_input(
        self, stack: list[dict[str, Params]], context: jax.Array
    ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """Split the core's first input projection into its token, note-on and context parts.

        The core reads [previous token one-hot, note-on flag, bar context]; the context
        is the same for all S steps of a bar, so its part of x W_ih (+ b_ih) is computed
        once per bar instead of once per step. Returns (W_ih token rows [D, G*H], the
        note-on row [G*H] or None without a rhythm decoder, context projection [..., G*H]).
        """
        w_ih, depth = stack[0]["uni"]["w_ih"], self.config.input_depth
        flags = 1 if self.config.rhythm_hidden else 0
        context_proj = (
            rnn.matmul(context, w_ih[depth + flags :], self._dtype) + stack[0]["uni"]["b_ih"]
        )
        w_note_on = w_ih[depth] if flags else None
        return w_ih[:depth], w_note_on, context_proj

    def feed_core(
        self,
        context: jax.Array,
        core_init: list[rnn.Carry],
        previous: jax.Array,
        token_keep: jax.Array | None,
        onsets: jax.Array | None,
        core_key: jax.Array | None,
    ) -> jax.Array:
        """Logits [S, N, D] of the core over N = B*U bars fed the given inputs, time-major.

        `previous` [S, N] are the fed token ids (`depth`: the zero input), their W_ih
        rows looked up, not multiplied; `token_keep` [S, N] zeroes dropped inputs;
        `onsets` [S, N] are a rhythm decoder's note-on flags; `context` [N, E] and
        `core_init` (arrays [N, H]) come from `bar_context`.
        """
        cfg = self.config
        stack = self.core()
        w_token, w_note_on, context_proj = self.core_input(stack, context)
        token_proj = rnn.project_token_directions(previous[None], w_token[None], self._dtype)[0]
        if token_keep is not None:
            token_proj = token_proj * token_keep[..., None]
        x_proj = rnn.add_to_every_step(token_proj, context_proj)
        if w_note_on is not None:
            x_proj = x_proj + onsets[..., None] * w_note_on
        _, top = rnn.run_stack(
            cfg.cell,
            stack,
            x_proj,
            core_init,
            self._dtype,
            cfg.dropout,
            core_key,
            projected=True,
            time_major=True,
            gradient=cfg.rnn_gradient,
        )
        return dense(self.out(), top, self._dtype)

    def _rows(self, x: jax.Array | None) -> jax.Array | None:
        """[B, T, ...] -> time-major per-bar rows [S, B*U, ...]."""
        if x is None:
            return None
        return jnp.swapaxes(_to_bars(x, self.config.num_bars), 0, 1)

    def _core_start(
        self, z_dec: jax.Array, key: jax.Array | None
    ) -> tuple[jax.Array, list[rnn.Carry]]:
        """`bar_context` with bars as rows: context [B*U, E], carries of arrays [B*U, H]."""
        context, core_init = self.bar_context(z_dec, key)
        rows = z_dec.shape[0] * self.config.num_bars
        carries = [tuple(a.reshape(rows, -1) for a in cr) for cr in core_init]
        return context.reshape(rows, -1), carries

    def teacher_forced(
        self,
        tokens: jax.Array,
        z_dec: jax.Array,
        deterministic: bool,
        token_keep: jax.Array | None = None,
        onsets: jax.Array | None = None,
    ) -> jax.Array:
        """Logits [B, T, D] with the true previous token fed at every step.

        `token_keep` [B, T] (1 keep, 0 drop) zeroes dropped steps' previous-token input;
        `onsets` [B, T] are the note-on flags a rhythm decoder's model reads.
        """
        cfg = self.config
        key = self._dropout_key(deterministic)
        conductor_key, core_key = (None, None) if key is None else jax.random.split(key)
        context, carries = self._core_start(z_dec, conductor_key)
        previous = self._rows(previous_token_ids(tokens, cfg.input_depth))
        logits = self.feed_core(
            context, carries, previous, self._rows(token_keep), self._rows(onsets), core_key
        )
        return jnp.swapaxes(logits, 0, 1).reshape(tokens.shape[0], cfg.sequence_length, -1)

    def scheduled(
        self,
        tokens: jax.Array,
        z_dec: jax.Array,
        sampling_probability: jax.Array,
        choose_noise: jax.Array,
        gumbel: jax.Array,
        temperature: float,
        deterministic: bool,
        token_keep: jax.Array | None = None,
        onsets: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Scheduled sampling, bars batched: within a bar, feed back a sample with prob. p.

        Two passes: a sampling loop without gradients decides what each step is fed
        (its own Gumbel sample where fed back, the truth elsewhere), then the core runs
        teacher-forced on those inputs. The samples carry no gradient, so the logits and
        their gradient are those of the step-by-step loop, at the cost and memory of
        teacher forcing. `token_keep` [B, T] zeroes the fed input (truth or sample); the
        note-on flags `onsets` [B, T] (rhythm decoder) are always the given ones.
        """
        cfg = self.config
        key = self._dropout_key(deterministic)
        conductor_key, core_key = (None, None) if key is None else jax.random.split(key)
        context, carries = self._core_start(z_dec, conductor_key)
        truth = self._rows(previous_token_ids(tokens, cfg.input_depth))
        not_bar_start = (jnp.arange(cfg.sequence_length) % cfg.steps_per_bar) != 0
        fed_back = (choose_noise < sampling_probability) & not_bar_start[None, :]
        keep, bar_onsets = self._rows(token_keep), self._rows(onsets)
        previous, sampled = self._sampled_inputs(
            context,
            carries,
            truth,
            self._rows(fed_back),
            self._rows(gumbel),
            keep,
            bar_onsets,
            temperature,
            core_key,
        )
        logits = self.feed_core(context, carries, previous, keep, bar_onsets, core_key)
        batch = tokens.shape[0]
        return {
            "logits": jnp.swapaxes(logits, 0, 1).reshape(batch, cfg.sequence_length, -1),
            "sampled": jnp.swapaxes(sampled, 0, 1).reshape(batch, cfg.sequence_length),
            "fed_back": fed_back,
        }

    def _sampled_inputs(
        self,
        context: jax.Array,
        carries: list[rnn.Carry],
        truth: jax.Array,
        fed_back: jax.Array,
        gumbel: jax.Array,
        token_keep: jax.Array | None,
        onsets: jax.Array | None,
        temperature: float,
        core_key: jax.Array | None,
    ) -> tuple[jax.Array, jax.Array]:
        """Scheduled sampling's first pass, step by step and without gradients: the ids
        fed at each step [S, N] and each step's Gumbel sample [S, N]. Dropout uses the
        masks `feed_core`'s `run_stack` draws, so both passes run the same network."""
        cfg = self.config
        stop = jax.lax.stop_gradient
        stack = stop(self.core())
        w_token, w_note_on, context_proj = self.core_input(stack, stop(context))
        weights = (stack, stop(self.out()), w_token, w_note_on)
        steps, rows = truth.shape
        keeps = [None] + [
            None
            if core_key is None or cfg.dropout == 0.0
            else rnn.dropout_keep(core_key, k, cfg.dropout, (steps, rows, cfg.decoder_hidden))
            for k in range(1, cfg.decoder_layers)
        ]

        def step(state, xs):
            carries, sampled_prev = state
            truth_t, fed_t, gumbel_t, keep_t, onset_t, keeps_t = xs
            previous = jnp.where(fed_t, sampled_prev, truth_t)
            carries, logits = self._decode_step(
                weights, carries, previous, context_proj, onset_t, keep_t, keeps_t
            )
            sampled = jnp.argmax(logits / temperature + gumbel_t, -1)
            return (carries, sampled), (previous, sampled)

        initial = (stop(carries), jnp.zeros(truth.shape[1:], truth.dtype))
        xs = (truth, fed_back, gumbel, token_keep, onsets, keeps)
        _, (previous, sampled) = jax.lax.scan(step, initial, xs)
        return previous, sampled

    def _decode_step(
        self,
        weights: tuple[list[dict[str, Params]], Params, jax.Array, jax.Array | None],
        carries: list[rnn.Carry],
        previous: jax.Array,
        context_proj: jax.Array,
        onset: jax.Array | None,
        keep: jax.Array | None = None,
        keeps: list[jax.Array | None] | None = None,
    ) -> tuple[list[rnn.Carry], jax.Array]:
        """One step of the loops that are not differentiated (generation, scheduled
        sampling's sampling pass): new carries and logits [N, D] for the fed token ids
        `previous` [N]. `weights` is (core stack, output layer, W_ih token rows, note-on
        row or None); `keep` [N] is token dropout, `keeps` the step's dropout masks."""
        stack, out, w_token, w_note_on = weights
        # The one-hot times W_ih is a row lookup; index `depth` reads the zero input.
        x_proj = jnp.take(w_token, previous, axis=0, mode="fill", fill_value=0.0)
        if keep is not None:
            x_proj = x_proj * keep[:, None]
        if w_note_on is not None:
            x_proj = x_proj + onset[:, None] * w_note_on
        carries, top = rnn.stack_step(
            self.config.cell,
            stack,
            x_proj + context_proj,
            carries,
            self._dtype,
            True,
            self.config.dropout,
            keeps,
        )
        return carries, dense(out, top, self._dtype)

    def generate(
        self,
        z_dec: jax.Array,
        gumbel: jax.Array | None,
        temperature: float,
        onsets: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Free-running decoding; bar u starts from the last token of bar u-1.

        `onsets` [B, T]: the note-on flags a rhythm decoder's model reads."""
        cfg = self.config
        batch, bars, steps, depth = z_dec.shape[0], cfg.num_bars, cfg.steps_per_bar, cfg.input_depth
        context, core_init = self.bar_context(z_dec, None)
        stack = self.core()
        w_token, w_note_on, context_proj = self.core_input(stack, context)
        weights = (stack, self.out(), w_token, w_note_on)
        if gumbel is None:
            noise = jnp.zeros((bars, steps, batch, depth), jnp.float32)
        else:
            noise = jnp.transpose(gumbel.reshape(batch, bars, steps, depth), (1, 2, 0, 3))
        per_step = (
            noise,
            None
            if w_note_on is None
            else jnp.transpose(onsets.reshape(batch, bars, steps), (1, 2, 0)),
        )
        per_bar = (
            jnp.swapaxes(context_proj, 0, 1),
            [tuple(jnp.swapaxes(a, 0, 1) for a in cr) for cr in core_init],
            per_step,
        )
        scale = 1.0 if gumbel is None else 1.0 / temperature

        def bar(previous, xs):
            context_proj_u, carries, per_step_u = xs

            def step(state, xs_t):
                carries, previous = state
                noise_t, onset_t = xs_t
                carries, logits = self._decode_step(
                    weights, carries, previous, context_proj_u, onset_t
                )
                token = jnp.argmax(logits * scale + noise_t, -1)
                return (carries, token), (logits, token)

            (_, previous), outputs = jax.lax.scan(step, (carries, previous), per_step_u)
            return previous, outputs

        start = jnp.full((batch,), depth, jnp.int32)
        _, (logits, tokens) = jax.lax.scan(bar, start, per_bar)
        return {
            "tokens": jnp.transpose(tokens, (2, 0, 1)).reshape(batch, bars * steps),
            "logits": jnp.transpose(logits, (2, 0, 1, 3)).reshape(batch, bars * steps, depth),
        }


class AttributeAdversary(nn.Module):
    """An MLP (one ReLU layer) that predicts the Gaussianised danceability from z."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.hidden = DenseWeights(cfg.head_size, cfg.adversary_hidden)
        self.output = DenseWeights(cfg.adversary_hidden, 1)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.compute_dtype)
        out = dense(self.output(), jax.nn.relu(dense(self.hidden(), z, dtype)), dtype)[:, 0]
        if cfg.adversary_bound:
            out = cfg.adversary_bound * jnp.tanh(out / cfg.adversary_bound)
        return out


class RhythmDecoder(nn.Module):
    """An MLP (one tanh layer) from z's first `rhythm_code_size` dimensions to one
    note-on logit per step, [B, T]."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.hidden = DenseWeights(cfg.rhythm_code_size, cfg.rhythm_hidden)
        self.output = DenseWeights(cfg.rhythm_hidden, cfg.sequence_length)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.compute_dtype)
        hidden = jnp.tanh(dense(self.hidden(), z[:, : cfg.rhythm_code_size], dtype))
        return dense(self.output(), hidden, dtype)


class MusicVAE(nn.Module):
    """Encoder, latent code (with the danceability condition) and decoder."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.encoder = Encoder(cfg)
        if cfg.wiring == "original":
            self.z_embedding = DenseWeights(cfg.z_size, cfg.head_size)
        self.decoder = Decoder(cfg)
        if cfg.adversary_hidden:
            self.adversary = AttributeAdversary(cfg)
        if cfg.rhythm_hidden:
            self.rhythm = RhythmDecoder(cfg)

    def _check_condition(self, condition: jax.Array | None, batch: int) -> None:
        if self.config.uses_condition:
            if condition is None:
                raise ValueError(
                    f"condition (danceability, shape [{batch}]) is required with "
                    f"conditioning={self.config.conditioning!r}"
                )
            check_shape("condition", condition, (batch,))

    def _check_tokens(self, tokens: jax.Array) -> None:
        cfg = self.config
        check_shape("tokens", tokens, (None, cfg.sequence_length))
        if not jnp.issubdtype(jnp.asarray(tokens).dtype, jnp.integer):
            raise ValueError(f"tokens must be integers, got {jnp.asarray(tokens).dtype}")
        if not isinstance(tokens, jax.core.Tracer):
            low, high = int(jnp.min(tokens)), int(jnp.max(tokens))
            if low < 0 or high >= cfg.input_depth:
                raise ValueError(
                    f"tokens must lie in [0, {cfg.input_depth}), found values in [{low}, {high}]"
                )

    def encode(
        self, tokens: jax.Array, condition: jax.Array | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """mu and sigma, both [B, z_size]."""
        self._check_tokens(tokens)
        self._check_condition(condition, tokens.shape[0])
        return self.encoder(tokens, condition, deterministic)

    def decoder_code(self, z: jax.Array, condition: jax.Array | None = None) -> jax.Array:
        """What the decoder is fed: z_embedding (original wiring) and c for `decoder`."""
        cfg = self.config
        check_shape("z", z, (None, cfg.z_size))
        self._check_condition(condition, z.shape[0])
        code = z
        if cfg.wiring == "original":
            code = jnp.tanh(dense(self.z_embedding(), z, jnp.dtype(cfg.compute_dtype)))
        if cfg.conditioning == "decoder":
            code = jnp.concatenate([code, condition[:, None]], axis=-1)
        return code

    def __call__(
        self,
        tokens: jax.Array,
        condition: jax.Array | None = None,
        eps: jax.Array | None = None,
        sampling_probability: float | jax.Array = 0.0,
        choose_noise: jax.Array | None = None,
        gumbel: jax.Array | None = None,
        temperature: float = 1.0,
        deterministic: bool = True,
        token_keep: jax.Array | None = None,
        attribute_dimension: int | None = None,
        predicted_onsets: bool = False,
    ) -> dict[str, jax.Array]:
        """Encode, sample z = mu + sigma * eps and decode with the true or sampled inputs.

        Teacher forcing unless `choose_noise` and `gumbel` are given, in which case
        scheduled sampling with probability `sampling_probability` (which may be traced).
        `token_keep` [B, T] (token dropout, 1 keep / 0 drop) zeroes previous-token inputs.
        With an adversary, `adversary_prediction` [B] is its prediction from z without
        `attribute_dimension` (the regularised one, if any), through the gradient reversal.
        With a rhythm decoder, `rhythm_logits` [B, T] are its note-on logits from z, and
        the core reads the true note-ons (training) or, with `predicted_onsets`, the
        rhythm decoder's (what a reconstruction from z has).
        """
        cfg = self.config
        mu, sigma = self.encode(tokens, condition, deterministic)
        batch = tokens.shape[0]
        if eps is None:
            eps = jnp.zeros_like(mu)
        check_shape("eps", eps, (batch, cfg.z_size))
        z = mu + sigma * eps
        z_dec = self.decoder_code(z, condition)
        result = {"mu": mu, "sigma": sigma, "z": z, "z_dec": z_dec}
        if cfg.adversary_hidden:
            result["adversary_prediction"] = self.predict_attribute(z, attribute_dimension)
        onsets = None
        if cfg.rhythm_hidden:
            logits = result["rhythm_logits"] = self.rhythm(z)
            onsets = note_on_flags(logits) if predicted_onsets else note_ons(tokens)
        if token_keep is not None:
            check_shape("token_keep", token_keep, (batch, cfg.sequence_length))
        if choose_noise is None:
            result["logits"] = self.decoder.teacher_forced(
                tokens, z_dec, deterministic, token_keep, onsets
            )
            return result
        if gumbel is None:
            raise ValueError("scheduled sampling needs both choose_noise and gumbel")
        check_shape("choose_noise", choose_noise, (batch, cfg.sequence_length))
        check_shape("gumbel", gumbel, (batch, cfg.sequence_length, cfg.input_depth))
        result.update(
            self.decoder.scheduled(
                tokens,
                z_dec,
                sampling_probability,
                choose_noise,
                gumbel,
                temperature,
                deterministic,
                token_keep,
                onsets,
            )
        )
        return result

    def predict_attribute(self, z: jax.Array, attribute_dimension: int | None) -> jax.Array:
        """The adversary's prediction [B] from z without `attribute_dimension`: its
        gradient trains the adversary and, reversed, the encoder against it."""
        return self.adversary(adversary_input(z, self.config.head_size, attribute_dimension))

    def generate(
        self,
        z: jax.Array,
        condition: jax.Array | None = None,
        temperature: float = 1.0,
        gumbel: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Free-running tokens [B, T] from z [B, z_size]; argmax without gumbel noise.

        With a rhythm decoder the note-ons are its (logit > 0) at any temperature."""
        cfg = self.config
        z_dec = self.decoder_code(z, condition)
        if gumbel is not None:
            check_shape("gumbel", gumbel, (z.shape[0], cfg.sequence_length, cfg.input_depth))
        onsets = note_on_flags(self.rhythm(z)) if cfg.rhythm_hidden else None
        return self.decoder.generate(z_dec, gumbel, temperature, onsets)


def init_params(config: ModelConfig, key: jax.Array, batch: int = 1) -> dict[str, Any]:
    """Parameters of a fresh model (float32), created by tracing a teacher-forced pass."""
    model = MusicVAE(config)
    tokens = jnp.zeros((batch, config.sequence_length), jnp.int32)
    condition = jnp.zeros((batch,), jnp.float32) if config.uses_condition else None
    return model.init(key, tokens, condition)["params"]
