"""Training schedules as plain functions of the step (framework-free).

Both trainers evaluate beta, the sampling probability and the adversary's weight
on the host in float64 and hand the result to their step function, so the Flax and
torch trainers see the same numbers. The learning rate is evaluated on the host by
the torch trainer and, from the same function, on the device inside the Flax
optimiser (`steps.learning_rate_schedule`, float32).
"""

from __future__ import annotations

import math
from typing import Any

from jax_musicvae.config import LossConfig, OptimConfig, SamplingConfig


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def beta(step: int, loss: LossConfig) -> float:
    """KL weight (1 - rate^step) * max_beta."""
    return (1.0 - loss.beta_rate**step) * loss.max_beta


def sampling_probability(step: int, sampling: SamplingConfig) -> float:
    """Probability of feeding back a sample instead of the ground truth."""
    if sampling.schedule == "teacher_forcing":
        return 0.0
    if sampling.schedule == "constant":
        return sampling.rate
    if sampling.schedule == "exponential":
        return 1.0 - sampling.rate**step
    # inverse sigmoid: 1 - k / (k + exp(step / k)) written without overflow.
    k = sampling.rate
    return _sigmoid(step / k - math.log(k))


def adversary_weight(step: int, loss: LossConfig) -> float:
    """The adversary's loss weight: attribute_adversary, grown linearly from 0 over
    attribute_adversary_ramp steps when that is > 0."""
    if loss.attribute_adversary_ramp <= 0:
        return loss.attribute_adversary
    return loss.attribute_adversary * min(1.0, step / loss.attribute_adversary_ramp)


def learning_rate(step: Any, optim: OptimConfig) -> Any:
    """(lr0 - lr_min) * decay^step + lr_min, for a Python number or an array of steps."""
    span = optim.learning_rate - optim.min_learning_rate
    return span * optim.decay_rate**step + optim.min_learning_rate
