"""ELBO with free bits (MusicVAE), or the original project's Bernoulli reconstruction.

Per example b, then batch mean, exactly as docs/architecture.md ("Loss").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from jax_musicvae.config import LossConfig, ModelConfig
from torch_reference.model import note_ons

_LOG_CLAMP = -100.0  # torch BCELoss's clamp, kept for the original's loss


def _bernoulli_terms(logits: Tensor, tokens: Tensor, target_smoothing: float) -> Tensor:
    """-(y log p + (1-y) log(1-p)) per step and class, logs clamped at -100: [B, T, D].

    log(1-p) = log1p(-p) is finite for every float32 p < 1 (>= about -16.6), so the
    clamp only bites where p rounds to exactly 1; there the value is -100 and the
    gradient is taken as 0 (the naive clamp(log1p(-p)) would give 0 * inf = NaN).
    """
    depth = logits.shape[-1]
    y = F.one_hot(tokens, depth).to(logits.dtype)
    if target_smoothing > 0:
        y = torch.softmax(target_smoothing * y, dim=-1)
    log_p = torch.clamp(F.log_softmax(logits, dim=-1), min=_LOG_CLAMP)
    p = torch.softmax(logits, dim=-1)
    saturated = p >= 1.0
    safe_p = torch.where(saturated, torch.zeros_like(p), p)
    log_1mp = torch.where(saturated, torch.full_like(p, _LOG_CLAMP), torch.log1p(-safe_p))
    log_1mp = torch.clamp(log_1mp, min=_LOG_CLAMP)
    return -(y * log_p + (1.0 - y) * log_1mp)


def normalised_hsic(x: Tensor, t: Tensor) -> Tensor:
    """HSIC(x, t) / sqrt(HSIC(x, x) HSIC(t, t)) with Gaussian kernels, x [B, n], t [B];
    each bandwidth is the mean pairwise squared distance, detached (as the Flax loss)."""

    def centred_kernel(distances: Tensor) -> Tensor:
        kernel = torch.exp(-distances / (distances.mean().detach() + 1e-8))
        return (
            kernel
            - kernel.mean(dim=0, keepdim=True)
            - kernel.mean(dim=1, keepdim=True)
            + kernel.mean()
        )

    kx = centred_kernel((x[:, None, :] - x[None, :, :]).square().sum(dim=-1))
    kt = centred_kernel((t[:, None] - t[None, :]).square())
    return (kx * kt).sum() / torch.sqrt((kx * kx).sum() * (kt * kt).sum() + 1e-8)


def attribute_terms(z: Tensor, target: Tensor, cfg: LossConfig) -> dict[str, Tensor]:
    """Attribute regulariser of z[:, r]; decorrelation and kernel independence of the others.

    z [B, n] (encoded dimensions), target [B] (the Gaussianised attribute); the
    formulas are those of LossConfig's docstring.
    """
    r = cfg.attribute_dimension
    z_r = z[:, r]
    if cfg.attribute_loss == "sign":
        close = torch.tanh(cfg.attribute_sign_scale * (z_r[:, None] - z_r[None, :]))
        order = torch.sign(target[:, None] - target[None, :])
        regulariser = (close - order).abs().mean()
    else:
        regulariser = (z_r - target).abs().mean()
    # Without a regularised dimension (c given to the model instead), decorrelate all of z.
    others = z if cfg.attribute_loss == "none" else torch.cat([z[:, :r], z[:, r + 1 :]], dim=-1)
    terms = {}
    if cfg.attribute_independence > 0:  # the kernels cost B^2 n: only when used
        terms["attribute_independence"] = normalised_hsic(others, target)
    others = others - others.mean(dim=0)
    centred = target - target.mean()
    variance = others.square().sum(dim=0) * centred.square().sum()
    decorrelation = ((centred @ others).square() / (variance + 1e-8)).sum()
    z_c = z_r - z_r.mean()
    correlation = (centred * z_c).sum() / torch.sqrt(
        centred.square().sum() * z_c.square().sum() + 1e-8
    )
    return {
        "attribute_regulariser": regulariser,
        "attribute_decorrelation": decorrelation,
        **terms,
        "attribute_correlation": correlation.detach(),
    }


def elbo_loss(
    logits: Tensor,
    tokens: Tensor,
    mu: Tensor,
    sigma: Tensor,
    loss_config: LossConfig,
    model_config: ModelConfig,
    beta: float,
    mask: Tensor | None = None,
    z: Tensor | None = None,
    attribute: Tensor | None = None,
    adversary_prediction: Tensor | None = None,
    adversary_weight: float | None = None,
    rhythm_logits: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = mean_b r_b + beta * mean_b max(kl_b - free_nats, 0), and detached metrics.

    logits [B, T, D], tokens [B, T], mu/sigma [B, z_size] (only the first
    `head_size` dims enter the KL: the appended c of `latent` does not), mask
    [B, T] (1 = valid step; default all ones). With `loss_config.uses_attribute`
    and an `attribute` [B], plus the attribute terms of the sampled z and, with
    `loss_config.attribute_adversary`, the squared error of the model's
    `adversary_prediction` [B] (its gradient reaches the encoder reversed), weighted
    by `adversary_weight` (`schedules.adversary_weight`; None: the configured weight).
    With a rhythm decoder's `rhythm_logits` [B, T], plus `loss_config.rhythm_weight`
    times its note-on cross-entropy (summed over steps, mean over the batch).
    """
    if logits.dim() != 3 or tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"logits must be [B, T, D] and tokens [B, T]; got {list(logits.shape)} "
            f"and {list(tokens.shape)}"
        )
    tokens = tokens.long()
    if mask is None:
        mask = torch.ones(tokens.shape, dtype=logits.dtype, device=logits.device)
    elif tuple(mask.shape) != tuple(tokens.shape):
        raise ValueError(f"mask must be [B, T]={list(tokens.shape)}; got {list(mask.shape)}")
    mask = mask.to(logits.dtype)

    if loss_config.recon_loss == "categorical":
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [B, T]
        recon_b = (mask * ce).sum(dim=1)
    else:
        terms = _bernoulli_terms(logits, tokens, loss_config.target_smoothing)
        recon_b = (mask[..., None] * terms).sum(dim=(1, 2))

    n = model_config.head_size
    mu_k, sigma_k = mu[:, :n], sigma[:, :n]
    kl_b = 0.5 * (sigma_k**2 + mu_k**2 - 1.0 - 2.0 * torch.log(sigma_k)).sum(dim=1)
    kl_cost_b = torch.clamp(kl_b - loss_config.free_nats, min=0.0)

    recon = recon_b.mean()
    kl_cost = kl_cost_b.mean()
    loss = recon + beta * kl_cost
    extra = {}
    if loss_config.uses_attribute and attribute is not None:
        extra = attribute_terms(z[:, : model_config.head_size], attribute, loss_config)
        if loss_config.attribute_loss != "none":
            loss = loss + loss_config.attribute_weight * extra["attribute_regulariser"]
        loss = loss + loss_config.attribute_decorrelation * extra["attribute_decorrelation"]
        if loss_config.attribute_independence > 0:
            loss = loss + loss_config.attribute_independence * extra["attribute_independence"]
        if loss_config.attribute_adversary > 0:
            if adversary_prediction is None:
                raise ValueError("loss.attribute_adversary > 0 needs the adversary's prediction")
            error = (adversary_prediction - attribute).square().mean()
            if adversary_weight is None:
                adversary_weight = loss_config.attribute_adversary
            extra["attribute_adversary"] = error
            extra["adversary_weight"] = torch.tensor(float(adversary_weight), dtype=error.dtype)
            loss = loss + adversary_weight * error
    if model_config.rhythm_hidden:
        if rhythm_logits is None:
            raise ValueError("a model with a rhythm decoder needs its rhythm_logits in the loss")
        onsets = note_ons(tokens, rhythm_logits.dtype)
        per_step = F.binary_cross_entropy_with_logits(rhythm_logits, onsets, reduction="none")
        rhythm = (mask * per_step).sum(dim=1).mean()
        right = ((rhythm_logits > 0) == (onsets > 0)).to(mask.dtype)
        extra["rhythm"] = rhythm
        extra["rhythm_accuracy"] = (mask * right).sum() / mask.sum()
        loss = loss + loss_config.rhythm_weight * rhythm

    with torch.no_grad():
        correct = (logits.argmax(dim=-1) == tokens).to(logits.dtype)
        kl = kl_b.mean()
        metrics = {
            "loss": loss.detach(),
            "recon": recon.detach(),
            "kl": kl,
            "kl_bits": kl / math.log(2.0),
            "kl_cost": kl_cost.detach(),
            "beta": torch.tensor(float(beta), dtype=logits.dtype),
            "elbo": -(recon_b + kl_b).mean(),
            "accuracy": (mask * correct).sum() / mask.sum(),
            **{name: value.detach() for name, value in extra.items()},
        }
    return loss, metrics
