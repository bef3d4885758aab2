"""Minimal trainer for the reference model: Adam, the shared schedules, global-norm clipping.

Not a second product: it exists so the parity suite can drive torch and Flax
through identical steps. All noise is an explicit argument of `train_step`;
`sample_noise` draws it from a `torch.Generator` for standalone training.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jax_musicvae import schedules
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.statistics import gaussianise
from torch_reference.loss import elbo_loss

logger = logging.getLogger(__name__)


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Adam:
    """Adam as configured (torch's eps sits outside the square root, like optax)."""
    return torch.optim.Adam(
        model.parameters(),
        lr=optim.learning_rate,
        betas=(optim.adam_b1, optim.adam_b2),
        eps=optim.adam_eps,
    )


def clip_gradients(model: nn.Module, optim: OptimConfig) -> float:
    """Global norm g; zero all grads if g > zero_grad_norm, else scale by clip/max(g, clip).

    Written out rather than `clip_grad_norm_`, which adds 1e-6 to the norm.
    Returns g.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    g = float(norm)
    if g > optim.zero_grad_norm:
        for grad in grads:
            grad.zero_()
    else:
        scale = optim.clip_norm / max(g, optim.clip_norm)
        for grad in grads:
            grad.mul_(scale)
    return g


def sample_noise(
    cfg: ModelConfig,
    batch_size: int,
    generator: torch.Generator,
    scheduled: bool = True,
    token_dropout: float = 0.0,
) -> dict[str, Tensor | None]:
    """eps ~ N(0, I) [B, z_size]; choose_noise ~ U[0, 1) [B, T]; gumbel [B, T, D];
    token_keep [B, T] (1 keep, 0 drop with probability token_dropout)."""
    T, D = cfg.sequence_length, cfg.input_depth
    eps = torch.randn(batch_size, cfg.z_size, generator=generator)
    noise: dict[str, Tensor | None] = {"eps": eps, "choose_noise": None, "gumbel": None}
    if scheduled:
        noise["choose_noise"] = torch.rand(batch_size, T, generator=generator)
        uniform = torch.rand(batch_size, T, D, generator=generator)
        tiny = torch.finfo(uniform.dtype).tiny
        exponential = -torch.log(uniform.clamp_min(tiny))  # Exp(1); Gumbel = -log(Exp(1))
        noise["gumbel"] = -torch.log(exponential.clamp_min(tiny))
    noise["token_keep"] = None
    if token_dropout > 0.0:
        keep = torch.rand(batch_size, T, generator=generator) >= token_dropout
        noise["token_keep"] = keep.float()
    return noise


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, Tensor | None],
    step: int,
    loss_cfg: LossConfig,
    optim_cfg: OptimConfig,
    sampling_cfg: SamplingConfig,
    eps: Tensor | None,
    choose_noise: Tensor | None = None,
    gumbel: Tensor | None = None,
    token_keep: Tensor | None = None,
) -> dict[str, float]:
    """One update at 0-based `step`: schedules, forward, loss, backward, clip, Adam.

    `batch` holds `tokens` [B, T] and `condition` [B] or None, optionally `mask`;
    `token_keep` [B, T] is the token-dropout mask (None: no token dropout).
    """
    lr = schedules.learning_rate(step, optim_cfg)
    beta = schedules.beta(step, loss_cfg)
    p = schedules.sampling_probability(step, sampling_cfg)
    adversary_weight = schedules.adversary_weight(step, loss_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr

    model.train()
    optimizer.zero_grad(set_to_none=True)
    out = model(
        batch["tokens"],
        batch.get("condition"),
        eps=eps,
        sampling_probability=p,
        choose_noise=choose_noise,
        gumbel=gumbel,
        temperature=sampling_cfg.temperature,
        token_keep=token_keep,
        attribute_dimension=loss_cfg.regularised_dimension,
    )
    loss, metrics = elbo_loss(
        out["logits"],
        batch["tokens"],
        out["mu"],
        out["sigma"],
        loss_cfg,
        model.cfg,
        beta,
        mask=batch.get("mask"),
        z=out["z"],
        attribute=batch.get("attribute"),
        adversary_prediction=out.get("adversary_prediction"),
        adversary_weight=adversary_weight,
        rhythm_logits=out.get("rhythm_logits"),
    )
    loss.backward()
    grad_norm = clip_gradients(model, optim_cfg)
    optimizer.step()
    # Freed now rather than at the next step's start, so they are not held between steps
    # (the Flax step's gradients are temporaries of its jitted step too).
    optimizer.zero_grad(set_to_none=True)

    result = {name: float(value) for name, value in metrics.items()}
    result.update(grad_norm=grad_norm, learning_rate=lr, sampling_probability=p)
    return result


def _to_torch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Tensor | None]:
    dtypes = {
        "tokens": torch.long,
        "condition": torch.float32,
        "mask": torch.float32,
        "attribute": torch.float32,
    }
    return {
        name: None
        if batch.get(name) is None
        else torch.as_tensor(np.asarray(batch[name]), dtype=dtype, device=device)
        for name, dtype in dtypes.items()
    }


def attribute_targets(batch: Mapping[str, Any], loss_cfg: LossConfig) -> np.ndarray:
    """The Gaussianised danceability of a batch's `condition` (the attribute loss's target)."""
    if batch.get("condition") is None or not loss_cfg.attribute_quantiles:
        raise ValueError(
            "the attribute loss needs each batch's `condition` and loss.attribute_quantiles"
        )
    return gaussianise(np.asarray(batch["condition"]), loss_cfg.attribute_quantiles)


def train(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    num_steps: int,
    loss_cfg: LossConfig,
    optim_cfg: OptimConfig,
    sampling_cfg: SamplingConfig,
    seed: int,
    log_every: int = 100,
) -> list[dict[str, float]]:
    """Plain loop over numpy batches; deterministic from `seed` (noise and dropout)."""
    optimizer = make_optimizer(model, optim_cfg)
    generator = torch.Generator().manual_seed(seed)  # CPU noise: same on every device
    device = next(model.parameters()).device
    if device.type == "cpu":
        # Flush denormals to zero, as XLA does: on some CPUs denormal arithmetic makes
        # the CPU steps an order of magnitude slower (docs/benchmarks.md).
        torch.set_flush_denormal(True)
    history: list[dict[str, float]] = []
    scheduled = sampling_cfg.schedule != "teacher_forcing"
    # Dropout inside nn.LSTM/GRU uses the global RNG: seed it without leaking state.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for step, numpy_batch in enumerate(itertools.islice(batches, num_steps)):
            if loss_cfg.uses_attribute and numpy_batch.get("attribute") is None:
                numpy_batch = {**numpy_batch, "attribute": attribute_targets(numpy_batch, loss_cfg)}
            batch = _to_torch(numpy_batch, device)
            noise = sample_noise(
                model.cfg,
                batch["tokens"].shape[0],
                generator,
                scheduled,
                sampling_cfg.token_dropout,
            )
            noise = {k: None if v is None else v.to(device) for k, v in noise.items()}
            metrics = train_step(
                model, optimizer, batch, step, loss_cfg, optim_cfg, sampling_cfg, **noise
            )
            history.append(metrics)
            if step % log_every == 0 or step == num_steps - 1:
                logger.info(
                    "step %d loss %.4f recon %.4f kl_bits %.2f acc %.3f |g| %.3g",
                    step,
                    metrics["loss"],
                    metrics["recon"],
                    metrics["kl_bits"],
                    metrics["accuracy"],
                    metrics["grad_norm"],
                )
    if len(history) < num_steps:
        logger.warning("batches ran out after %d of %d steps", len(history), num_steps)
    return history
