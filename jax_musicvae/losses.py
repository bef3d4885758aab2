"""The MusicVAE ELBO with free bits, or the original project's Bernoulli loss."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jax_musicvae.config import LossConfig, ModelConfig
from jax_musicvae.models import note_ons

LOG_CLAMP = -100.0  # torch's BCELoss clamps its logarithms here


def reconstruction_per_step(logits: jax.Array, tokens: jax.Array, loss: LossConfig) -> jax.Array:
    """Negative log-likelihood of each step, [B, T], in nats."""
    depth = logits.shape[-1]
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    one_hot = jax.nn.one_hot(tokens, depth, dtype=jnp.float32)
    if loss.recon_loss == "categorical":
        return -jnp.sum(one_hot * log_p, axis=-1)
    target = jax.nn.softmax(loss.target_smoothing * one_hot) if loss.target_smoothing else one_hot
    # log(1 - p) is -inf (with an infinite gradient) where p rounds to 1: take the
    # clamp's constant there, and keep the unused branch finite so its gradient is 0.
    p = jnp.exp(log_p)
    below_one = p < 1.0
    log_not_p = jnp.where(
        below_one, jnp.maximum(jnp.log1p(-jnp.where(below_one, p, 0.0)), LOG_CLAMP), LOG_CLAMP
    )
    log_p = jnp.maximum(log_p, LOG_CLAMP)
    return -jnp.sum(target * log_p + (1.0 - target) * log_not_p, axis=-1)


def kl_divergence(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """KL(N(mu, sigma) || N(0, I)) per example, summed over dimensions."""
    return 0.5 * jnp.sum(jnp.square(sigma) + jnp.square(mu) - 1.0 - 2.0 * jnp.log(sigma), -1)


def normalised_hsic(x: jax.Array, t: jax.Array) -> jax.Array:
    """HSIC(x, t) / sqrt(HSIC(x, x) HSIC(t, t)) with Gaussian kernels, x [B, n], t [B].

    0 when the batch shows no dependence of any kind, 1 for identical kernels. Each
    kernel's bandwidth is its mean pairwise squared distance (held constant in the
    gradient).
    """

    def centred_kernel(distances: jax.Array) -> jax.Array:
        kernel = jnp.exp(-distances / (jax.lax.stop_gradient(jnp.mean(distances)) + 1e-8))
        return (
            kernel
            - jnp.mean(kernel, axis=0, keepdims=True)
            - jnp.mean(kernel, axis=1, keepdims=True)
            + jnp.mean(kernel)
        )

    kx = centred_kernel(jnp.sum(jnp.square(x[:, None, :] - x[None, :, :]), axis=-1))
    kt = centred_kernel(jnp.square(t[:, None] - t[None, :]))
    return jnp.sum(kx * kt) / jnp.sqrt(jnp.sum(kx * kx) * jnp.sum(kt * kt) + 1e-8)


def rhythm_terms(
    rhythm_logits: jax.Array, tokens: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """The rhythm decoder's note-on cross-entropy (summed over steps, mean over the
    batch) and the share of steps whose note-on it gets right."""
    onsets = note_ons(tokens)
    logits = rhythm_logits.astype(jnp.float32)
    per_step = jnp.logaddexp(0.0, logits) - onsets * logits  # -log p(note-on flag)
    right = ((logits > 0) == (onsets > 0)).astype(jnp.float32)
    return {
        "rhythm": jnp.mean(jnp.sum(mask * per_step, axis=-1)),
        "rhythm_accuracy": jnp.sum(mask * right) / jnp.sum(mask),
    }


def attribute_terms(z: jax.Array, target: jax.Array, loss: LossConfig) -> dict[str, jax.Array]:
    """The attribute regulariser of z's dimension r; the decorrelation of the others from
    the target and their kernel dependence on it (`normalised_hsic`).

    z [B, n] (the encoded dimensions), target [B] (the Gaussianised attribute).
    """
    r = loss.attribute_dimension
    z_r = z[:, r]
    if loss.attribute_loss == "sign":
        close = jnp.tanh(loss.attribute_sign_scale * (z_r[:, None] - z_r[None, :]))
        order = jnp.sign(target[:, None] - target[None, :])
        regulariser = jnp.mean(jnp.abs(close - order))
    else:
        regulariser = jnp.mean(jnp.abs(z_r - target))
    # Without a regularised dimension (c given to the model instead), decorrelate all of z.
    others = z if loss.attribute_loss == "none" else jnp.concatenate([z[:, :r], z[:, r + 1 :]], -1)
    terms = {}
    if loss.attribute_independence > 0:  # the kernels cost B^2 n: only when used
        terms["attribute_independence"] = normalised_hsic(others, target)
    others = others - jnp.mean(others, axis=0)
    centred = target - jnp.mean(target)
    covariance = centred @ others
    variance = jnp.sum(jnp.square(others), axis=0) * jnp.sum(jnp.square(centred))
    correlation_sq = jnp.square(covariance) / (variance + 1e-8)
    return {
        "attribute_regulariser": regulariser,
        "attribute_decorrelation": jnp.sum(correlation_sq),
        **terms,
        "attribute_correlation": jnp.sum(centred * (z_r - jnp.mean(z_r)))
        / jnp.sqrt(jnp.sum(jnp.square(centred)) * jnp.sum(jnp.square(z_r - jnp.mean(z_r))) + 1e-8),
    }


def elbo_loss(
    logits: jax.Array,
    tokens: jax.Array,
    mu: jax.Array,
    sigma: jax.Array,
    loss: LossConfig,
    model: ModelConfig,
    beta: float | jax.Array,
    mask: jax.Array | None = None,
    z: jax.Array | None = None,
    attribute: jax.Array | None = None,
    adversary_prediction: jax.Array | None = None,
    adversary_weight: float | jax.Array | None = None,
    rhythm_logits: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss = mean_b r_b + beta * mean_b max(KL_b - free nats, 0), with its metrics.

    With `loss.uses_attribute` and an `attribute` (the Gaussianised danceability,
    [B]; evaluation without one leaves them out), plus the attribute terms of z and,
    with `loss.attribute_adversary`, the squared error of the model's
    `adversary_prediction` [B] (its gradient reaches the encoder reversed), weighted
    by `adversary_weight` (`schedules.adversary_weight`; None: the configured weight).
    With a rhythm decoder's `rhythm_logits` [B, T], plus `loss.rhythm_weight` times
    its note-on cross-entropy (`rhythm_terms`).
    """
    if mask is None:
        mask = jnp.ones(tokens.shape, jnp.float32)
    recon = jnp.sum(mask * reconstruction_per_step(logits, tokens, loss), axis=-1)
    kl = kl_divergence(mu[:, : model.head_size], sigma[:, : model.head_size])
    kl_cost = jnp.maximum(kl - loss.free_nats, 0.0)
    total = jnp.mean(recon) + beta * jnp.mean(kl_cost)
    extra = {}
    if loss.uses_attribute and attribute is not None:
        extra = attribute_terms(z[:, : model.head_size], attribute, loss)
        if loss.attribute_loss != "none":
            total = total + loss.attribute_weight * extra["attribute_regulariser"]
        total = total + loss.attribute_decorrelation * extra["attribute_decorrelation"]
        if loss.attribute_independence > 0:
            total = total + loss.attribute_independence * extra["attribute_independence"]
        if loss.attribute_adversary > 0:
            if adversary_prediction is None:
                raise ValueError("loss.attribute_adversary > 0 needs the adversary's prediction")
            error = jnp.mean(jnp.square(adversary_prediction - attribute))
            if adversary_weight is None:
                adversary_weight = loss.attribute_adversary
            extra["attribute_adversary"] = error
            extra["adversary_weight"] = jnp.asarray(adversary_weight, jnp.float32)
            total = total + adversary_weight * error
    if model.rhythm_hidden:
        if rhythm_logits is None:
            raise ValueError("a model with a rhythm decoder needs its rhythm_logits in the loss")
        extra.update(rhythm_terms(rhythm_logits, tokens, mask))
        total = total + loss.rhythm_weight * extra["rhythm"]
    correct = (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
    metrics = {
        "loss": total,
        "recon": jnp.mean(recon),
        "kl": jnp.mean(kl),
        "kl_bits": jnp.mean(kl) / math.log(2.0),
        "kl_cost": jnp.mean(kl_cost),
        "beta": jnp.asarray(beta, jnp.float32),
        "elbo": -jnp.mean(recon + kl),
        "accuracy": jnp.sum(mask * correct) / jnp.sum(mask),
        **extra,
    }
    return total, metrics
