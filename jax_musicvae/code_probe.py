"""How much danceability a model's code carries outside its controlled input.

A model follows a danceability request only if its decoder has to read danceability
from the controlled input (the attribute dimension, or c). If the rest of the code
also carries it, the decoder can take it from there and the request competes with
it. A linear decorrelation cannot show what is left, so the probe is nonlinear: a
one-hidden-layer MLP fitted on training windows' mu (the regularised dimension left
out) to predict each window's own danceability, scored by Spearman rho on held-out
windows. 0: nothing the probe can find; the unregularised model's figure is the
ceiling (docs/danceability-control.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_musicvae.statistics import spearman

PROBE_HIDDEN = 256
PROBE_STEPS = 3000
PROBE_BATCH = 256


def code_without(mu: np.ndarray, dimension: int | None) -> np.ndarray:
    """mu [N, n] without the regularised `dimension` (all of it for None)."""
    return mu if dimension is None else np.delete(mu, dimension, axis=1)


def probe_rho(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
) -> float:
    """Spearman rho between `test_y` and an MLP's predictions from `test_x`, the MLP
    fitted (Adam with weight decay, squared error) on standardised `train_x`."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = jnp.asarray((train_x - mean) / std, jnp.float32)
    y = jnp.asarray(train_y - train_y.mean(), jnp.float32)
    init_key, batch_key = jax.random.split(jax.random.key(seed))
    k1, k2 = jax.random.split(init_key)
    n = x.shape[1]
    params = {
        "w1": jax.random.normal(k1, (n, PROBE_HIDDEN)) / np.sqrt(n),
        "b1": jnp.zeros(PROBE_HIDDEN),
        "w2": jax.random.normal(k2, (PROBE_HIDDEN,)) / np.sqrt(PROBE_HIDDEN),
        "b2": jnp.zeros(()),
    }

    def predict(p, x):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    optimizer = optax.adamw(1e-3, weight_decay=1e-3)

    def step(carry, key):
        p, state = carry
        rows = jax.random.randint(key, (PROBE_BATCH,), 0, x.shape[0])
        grads = jax.grad(lambda p: jnp.mean(jnp.square(predict(p, x[rows]) - y[rows])))(p)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    keys = jax.random.split(batch_key, PROBE_STEPS)
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, keys))(
        (params, optimizer.init(params))
    )
    prediction = predict(params, jnp.asarray((test_x - mean) / std, jnp.float32))
    return float(spearman(np.asarray(prediction), np.asarray(test_y)))
