"""Optimiser and the pure, jit-able train and eval steps.

Randomness enters as explicit arrays (`Noise`), drawn by `draw_noise` from a key,
so the parity suite can drive this and the torch reference with the same noise.
Schedules (beta, sampling probability) are computed on the host by
`jax_musicvae.schedules` and passed in as scalars.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jax_musicvae import schedules
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.losses import elbo_loss
from jax_musicvae.models import MusicVAE

Batch = dict[str, jax.Array]

# Compiler options for `jax.jit` of `train_step`. XLA:CPU's region analysis lets copy
# insertion prove that a while loop may update its carried values in place; without it
# every step of the backward recurrences copied its carried activations and dh/dc first
# (bench_small: 32 of the compiled step's 83 copies; its LSTM step at B = 64 5% slower).
# The results are bitwise the same (docs/benchmarks.md, session 18). Other backends
# ignore xla_cpu_* options.
TRAIN_STEP_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


class Noise(NamedTuple):
    """All randomness of one step: reparameterisation, sampling choices, Gumbel noise,
    and the token-dropout mask (1 keep, 0 drop)."""

    eps: jax.Array
    choose_noise: jax.Array | None = None
    gumbel: jax.Array | None = None
    token_keep: jax.Array | None = None


def draw_noise(
    key: jax.Array, batch: int, model: ModelConfig, scheduled: bool, token_dropout: float = 0.0
) -> Noise:
    eps_key, choose_key, gumbel_key = jax.random.split(key, 3)
    eps = jax.random.normal(eps_key, (batch, model.z_size), jnp.float32)
    shape = (batch, model.sequence_length)
    token_keep = None
    if token_dropout > 0.0:
        # A key of its own, so runs without token dropout keep their noise streams.
        drop_key = jax.random.fold_in(key, 3)
        token_keep = (jax.random.uniform(drop_key, shape) >= token_dropout).astype(jnp.float32)
    if not scheduled:
        return Noise(eps, token_keep=token_keep)
    return Noise(
        eps,
        jax.random.uniform(choose_key, shape, jnp.float32),
        jax.random.gumbel(gumbel_key, (*shape, model.input_depth), jnp.float32),
        token_keep,
    )


def clip_or_zero(clip_norm: float, zero_norm: float) -> optax.GradientTransformation:
    """Global-norm clipping that zeroes the whole update above `zero_norm` (MusicVAE)."""

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        factor = jnp.where(norm > zero_norm, 0.0, clip_norm / jnp.maximum(norm, clip_norm))
        return jax.tree.map(lambda g: g * factor, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learning_rate_schedule(optim: OptimConfig) -> optax.Schedule:
    """`schedules.learning_rate` on the device (float32 step count)."""
    return lambda count: schedules.learning_rate(count.astype(jnp.float32), optim)


def make_optimizer(optim: OptimConfig) -> optax.GradientTransformation:
    return optax.chain(
        clip_or_zero(optim.clip_norm, optim.zero_grad_norm),
        optax.scale_by_adam(b1=optim.adam_b1, b2=optim.adam_b2, eps=optim.adam_eps),
        optax.scale_by_learning_rate(learning_rate_schedule(optim)),
    )


def create_state(model: ModelConfig, optim: OptimConfig, params: Any) -> train_state.TrainState:
    """A fresh TrainState whose step is an int32 array, as `train_step` returns it, so a
    jitted step compiles once rather than again after its first call."""
    state = train_state.TrainState.create(
        apply_fn=MusicVAE(model).apply, params=params, tx=make_optimizer(optim)
    )
    return state.replace(step=jnp.asarray(state.step, jnp.int32))


def _forward(
    params: Any,
    batch: Batch,
    noise: Noise,
    sampling_probability: jax.Array,
    model: ModelConfig,
    loss: LossConfig,
    sampling: SamplingConfig,
    dropout_key: jax.Array | None,
) -> dict[str, jax.Array]:
    rngs = {} if dropout_key is None else {"dropout": dropout_key}
    return MusicVAE(model).apply(
        {"params": params},
        batch["tokens"],
        batch.get("condition"),
        noise.eps,
        sampling_probability,
        noise.choose_noise,
        noise.gumbel,
        sampling.temperature,
        deterministic=dropout_key is None,
        token_keep=noise.token_keep,
        attribute_dimension=loss.regularised_dimension,
        rngs=rngs,
    )


def loss_and_metrics(
    params: Any,
    batch: Batch,
    noise: Noise,
    beta: jax.Array,
    sampling_probability: jax.Array,
    model: ModelConfig,
    loss: LossConfig,
    sampling: SamplingConfig,
    dropout_key: jax.Array | None = None,
    adversary_weight: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    out = _forward(params, batch, noise, sampling_probability, model, loss, sampling, dropout_key)
    return elbo_loss(
        out["logits"],
        batch["tokens"],
        out["mu"],
        out["sigma"],
        loss,
        model,
        beta,
        z=out["z"],
        attribute=batch.get("attribute"),
        adversary_prediction=out.get("adversary_prediction"),
        adversary_weight=adversary_weight,
        rhythm_logits=out.get("rhythm_logits"),
    )


def train_step(
    state: train_state.TrainState,
    batch: Batch,
    noise: Noise,
    beta: jax.Array,
    sampling_probability: jax.Array,
    dropout_key: jax.Array | None,
    *,
    model: ModelConfig,
    loss: LossConfig,
    sampling: SamplingConfig,
    adversary_weight: jax.Array | None = None,
) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
    """One Adam step; a non-finite loss or gradient leaves the state unchanged.

    `adversary_weight`: `schedules.adversary_weight` at this step (None: the configured
    weight, as without a ramp)."""
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (value, metrics), grads = grad_fn(
        state.params,
        batch,
        noise,
        beta,
        sampling_probability,
        model,
        loss,
        sampling,
        dropout_key,
        adversary_weight,
    )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    # A cond, not a select of old and new: a select keeps the old Adam moments alive beside
    # the new ones, and XLA copies both (0.9 GB of the paper configuration's 2.2 GB).
    new_state = jax.lax.cond(finite, lambda s: s.apply_gradients(grads=grads), lambda s: s, state)
    metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~finite).astype(jnp.float32)}
    return new_state, metrics


def eval_step(
    params: Any,
    batch: Batch,
    eps: jax.Array,
    *,
    model: ModelConfig,
    loss: LossConfig,
) -> dict[str, jax.Array]:
    """Teacher-forced ELBO metrics plus free-running (argmax) reconstruction accuracies.

    With a rhythm decoder the teacher-forced pass reads its note-ons, not the true
    ones (a reconstruction from z has no others).

    `sampled_accuracy` decodes z = mu + sigma * eps, `greedy_accuracy` decodes mu, and
    `shuffled_accuracy` decodes another example's mu (the batch rolled by one): the gap
    between the last two is how much the decoder relies on the code.
    """
    vae = MusicVAE(model)
    variables = {"params": params}
    tokens, condition = batch["tokens"], batch.get("condition")
    out = vae.apply(variables, tokens, condition, eps, predicted_onsets=True)
    prediction = None  # the adversary's, from mu like the other attribute terms here
    if model.adversary_hidden:
        prediction = vae.apply(
            variables,
            out["mu"],
            loss.regularised_dimension,
            method=MusicVAE.predict_attribute,
        )
    _, metrics = elbo_loss(
        out["logits"],
        tokens,
        out["mu"],
        out["sigma"],
        loss,
        model,
        1.0,
        z=out["mu"],
        attribute=batch.get("attribute"),
        adversary_prediction=prediction,
        rhythm_logits=out.get("rhythm_logits"),
    )
    codes = jnp.concatenate([out["z"], out["mu"], jnp.roll(out["mu"], 1, axis=0)])
    cond = None if condition is None else jnp.concatenate([condition] * 3)
    decoded = vae.apply(variables, codes, cond, method=MusicVAE.generate)["tokens"]
    correct = (decoded.reshape(3, *tokens.shape) == tokens[None]).astype(jnp.float32)
    sampled, greedy, shuffled = jnp.mean(correct, axis=(1, 2))
    training_only = ("loss", "beta", "kl_cost", "adversary_weight")
    metrics = {k: v for k, v in metrics.items() if k not in training_only}
    return {
        **metrics,
        "sampled_accuracy": sampled,
        "greedy_accuracy": greedy,
        "shuffled_accuracy": shuffled,
    }
