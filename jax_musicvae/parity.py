"""The parity suite: the Flax model and the torch reference compute the same thing.

For every cell x conditioning x wiring combination (plus Magenta's flat decoder) at
a small configuration with perturbed biases, both frameworks get the same weights,
batches and noise, and six checks compare them (see CHECKS). Each check yields a
`CheckResult`; `run_suite` returns them all.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jax_musicvae import schedules, steps
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.conversion.parameters import flax_to_torch, torch_to_flax
from jax_musicvae.losses import elbo_loss
from jax_musicvae.models import MusicVAE
from torch_reference import loss as torch_loss
from torch_reference import train as torch_train
from torch_reference.model import MusicVAE as TorchMusicVAE

OUTPUT_ATOL = 1e-5
LOSS_RTOL = 1e-5
GRAD_SCALE = 1e-4
PARAM_ATOL = 1e-4
TRAIN_STEPS = 10
BATCH = 3

CHECKS = (
    "outputs",
    "loss",
    "gradients",
    "scheduled_sampling",
    "scheduled_gradients",
    "generation",
    "optimizer_steps",
)
SCHEDULED_P, SCHEDULED_TEMPERATURE = 0.5, 0.8


@dataclasses.dataclass(frozen=True)
class Combination:
    cell: str
    conditioning: str
    wiring: str
    bars: int = 2
    readout: int = 0
    rhythm: bool = False

    @property
    def name(self) -> str:
        flat = "-flat" if self.bars == 1 else ""
        readout = f"-readout{self.readout}" if self.readout else ""
        rhythm = "-rhythm" if self.rhythm else ""
        return f"{self.cell}/{self.conditioning}/{self.wiring}{flat}{readout}{rhythm}"

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            cell=self.cell,
            encoder_hidden=12,
            encoder_layers=2,
            decoder_hidden=10,
            decoder_layers=2,
            latent_size=6,
            num_bars=self.bars,
            steps_per_bar=4,
            input_depth=13,
            conditioning=self.conditioning,
            wiring=self.wiring,
            encoder_readout_steps=self.readout,
            adversary_hidden=5,
            adversary_bound=1.5 if self.rhythm else 0.0,
            rhythm_hidden=7 if self.rhythm else 0,
            rhythm_code_size=3,
        )


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: str
    combination: str
    max_error: float
    tolerance: float
    passed: bool
    detail: str = ""
    device: str = "cpu"


def combinations() -> list[Combination]:
    """The 16 cell x conditioning x wiring combinations, Magenta's flat decoder, chunk
    readout, the rhythm decoder (with a bounded adversary)."""
    combos = [
        Combination(cell, cond, wiring)
        for wiring, cell, cond in itertools.product(
            ("original", "magenta"), ("lstm", "gru"), ("none", "encoder", "latent", "decoder")
        )
    ]
    combos += [Combination(cell, "none", "magenta", bars=1) for cell in ("lstm", "gru")]
    combos += [Combination(cell, "encoder", "magenta", readout=2) for cell in ("lstm", "gru")]
    combos += [Combination(cell, "none", "magenta", rhythm=True) for cell in ("lstm", "gru")]
    return combos


def _max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _rel(a: Any, b: Any) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-12)


class Harness:
    """One combination: a torch model with perturbed biases, the same weights in Flax."""

    def __init__(self, combo: Combination, device: str, seed: int = 0):
        self.combo = combo
        self.config = combo.model_config()
        self.device = torch.device(device)
        self.jax_device = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.torch_model = TorchMusicVAE(self.config)
        self._passes: dict[bool, tuple[Pass, Pass]] = {}
        with torch.no_grad():
            for name, p in self.torch_model.named_parameters():
                if "bias" in name:
                    p.add_(0.2 * torch.randn(p.shape, generator=generator))
        self.torch_model.to(self.device).eval()
        self.params = self._to_jax(torch_to_flax(self._state_dict_numpy(), self.config))
        self.flax_model = MusicVAE(self.config)
        rng = np.random.default_rng(seed)
        cfg = self.config
        self.tokens = rng.integers(0, cfg.input_depth, (BATCH, cfg.sequence_length))
        self.condition = (
            np.array([0.1, 0.55, 0.9], np.float32)[:BATCH] if cfg.uses_condition else None
        )
        self.eps = rng.standard_normal((BATCH, cfg.z_size)).astype(np.float32)
        self.choose_noise = rng.random((BATCH, cfg.sequence_length)).astype(np.float32)
        uniform = rng.random((BATCH, cfg.sequence_length, cfg.input_depth))
        self.gumbel = (-np.log(-np.log(np.clip(uniform, 1e-12, 1.0 - 1e-7)))).astype(np.float32)
        # The Gaussianised danceability the attribute loss variants regress onto.
        self.attribute = rng.standard_normal(BATCH).astype(np.float32)
        # Token dropout: a third of the previous-token inputs zeroed, in every pass that trains.
        self.token_keep = (rng.random((BATCH, cfg.sequence_length)) >= 1 / 3).astype(np.float32)

    def teacher_forced(self) -> tuple[Pass, Pass]:
        """(Flax, torch) teacher-forced passes, computed once per harness."""
        return self._pair(scheduled=False)

    def scheduled(self) -> tuple[Pass, Pass]:
        """(Flax, torch) passes with scheduled sampling; torch differentiates its step loop."""
        return self._pair(scheduled=True)

    def _pair(self, scheduled: bool) -> tuple[Pass, Pass]:
        if scheduled not in self._passes:
            self._passes[scheduled] = (jax_pass(self, scheduled), torch_pass(self, scheduled))
        return self._passes[scheduled]

    def _state_dict_numpy(self) -> dict[str, np.ndarray]:
        return {
            k: v.detach().cpu().numpy().copy() for k, v in self.torch_model.state_dict().items()
        }

    def _to_jax(self, tree: Any) -> Any:
        return jax.device_put(tree, self.jax_device)

    def t(self, array: np.ndarray | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if array is None:
            return None
        tensor = torch.as_tensor(np.asarray(array))
        return tensor.to(self.device, dtype=dtype) if dtype else tensor.to(self.device)

    def j(self, array: np.ndarray | None) -> jax.Array | None:
        return None if array is None else self._to_jax(jnp.asarray(array))


LOSS_VARIANTS = {
    "categorical": LossConfig(free_bits=1.0, max_beta=0.5, beta_rate=0.99),
    "bernoulli": LossConfig(recon_loss="bernoulli", target_smoothing=5.0, free_bits=0.5),
    "attribute-regression": LossConfig(
        free_bits=1.0, attribute_loss="regression", attribute_weight=2.0, attribute_dimension=1
    ),
    "decorrelation": LossConfig(free_bits=1.0, attribute_decorrelation=0.5),
    "independence": LossConfig(free_bits=1.0, attribute_independence=0.5),
    # The gradient check's objective: the ELBO plus every attribute term (and the
    # rhythm decoder's, where the model has one).
    "attribute-sign": LossConfig(
        free_bits=1.0,
        max_beta=0.5,
        beta_rate=0.99,
        attribute_loss="sign",
        attribute_weight=2.0,
        attribute_sign_scale=0.5,  # unsaturated tanh: the term and its gradient are not ~0
        attribute_decorrelation=0.5,
        attribute_independence=0.5,
        attribute_adversary=0.5,
        attribute_adversary_ramp=100,  # at BETA_STEP (50) the adversary has half its weight
        rhythm_weight=0.7,
    ),
}
GRADIENT_LOSS = "attribute-sign"
ATTRIBUTE_METRICS = (
    "attribute_regulariser",
    "attribute_decorrelation",
    "attribute_independence",
    "attribute_adversary",
    "rhythm",
    "rhythm_accuracy",
)
BETA_STEP = 50


@dataclasses.dataclass
class Pass:
    """One forward and backward pass of one framework, as numpy."""

    outputs: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    grads: dict[str, np.ndarray]


@functools.cache
def _jax_objective(config: ModelConfig):
    """Jitted value-and-grad of the ELBO with the forward outputs as aux (compiled once)."""
    model = MusicVAE(config)
    loss_cfg = LOSS_VARIANTS[GRADIENT_LOSS]

    def objective(params, tokens, condition, eps, token_keep, attribute, choose_noise, gumbel):
        out = model.apply(
            {"params": params},
            tokens,
            condition,
            eps,
            SCHEDULED_P,
            choose_noise,  # None: teacher forcing
            gumbel,
            SCHEDULED_TEMPERATURE,
            token_keep=token_keep,
            attribute_dimension=loss_cfg.regularised_dimension,
        )
        beta = schedules.beta(BETA_STEP, loss_cfg)
        value, _ = _jax_loss(out, tokens, loss_cfg, config, beta, attribute)
        return value, out

    return jax.jit(jax.value_and_grad(objective, has_aux=True))


def _jax_loss(out, tokens, loss_cfg, config, beta, attribute):
    return elbo_loss(
        out["logits"],
        tokens,
        out["mu"],
        out["sigma"],
        loss_cfg,
        config,
        beta,
        z=out["z"],
        attribute=attribute,
        adversary_prediction=out.get("adversary_prediction"),
        adversary_weight=schedules.adversary_weight(BETA_STEP, loss_cfg),
        rhythm_logits=out.get("rhythm_logits"),
    )


def _loss_variants(scheduled: bool) -> dict[str, LossConfig]:
    """Every variant's metrics for teacher forcing; the scheduled pass is only compared
    by its gradient, of the objective."""
    return {GRADIENT_LOSS: LOSS_VARIANTS[GRADIENT_LOSS]} if scheduled else LOSS_VARIANTS


def jax_pass(h: Harness, scheduled: bool) -> Pass:
    tokens, condition = h.j(h.tokens.astype(np.int32)), h.j(h.condition)
    attribute = h.j(h.attribute)
    noise = (h.j(h.choose_noise), h.j(h.gumbel)) if scheduled else (None, None)
    (_, out), grads = _jax_objective(h.config)(
        h.params, tokens, condition, h.j(h.eps), h.j(h.token_keep), attribute, *noise
    )
    metrics = {}
    for variant, loss_cfg in _loss_variants(scheduled).items():
        beta = schedules.beta(BETA_STEP, loss_cfg)
        _, m = _jax_loss(out, tokens, loss_cfg, h.config, beta, attribute)
        metrics[variant] = {k: float(v) for k, v in m.items()}
    return Pass(
        {k: np.asarray(v) for k, v in out.items()},
        metrics,
        flax_to_torch(jax.device_get(grads), h.config),
    )


def torch_pass(h: Harness, scheduled: bool) -> Pass:
    h.torch_model.zero_grad(set_to_none=True)
    tokens = h.t(h.tokens, torch.long)
    sampling = {}
    if scheduled:
        sampling = dict(
            sampling_probability=SCHEDULED_P,
            choose_noise=h.t(h.choose_noise),
            gumbel=h.t(h.gumbel),
            temperature=SCHEDULED_TEMPERATURE,
            loop_gradient=True,  # the definition the Flax model's two passes must equal
        )
    out = h.torch_model(
        tokens,
        h.t(h.condition),
        h.t(h.eps),
        token_keep=h.t(h.token_keep),
        attribute_dimension=LOSS_VARIANTS[GRADIENT_LOSS].regularised_dimension,
        **sampling,
    )
    metrics, objective = {}, None
    for variant, loss_cfg in _loss_variants(scheduled).items():
        beta = schedules.beta(BETA_STEP, loss_cfg)
        value, m = torch_loss.elbo_loss(
            out["logits"],
            tokens,
            out["mu"],
            out["sigma"],
            loss_cfg,
            h.config,
            beta,
            z=out["z"],
            attribute=h.t(h.attribute),
            adversary_prediction=out.get("adversary_prediction"),
            adversary_weight=schedules.adversary_weight(BETA_STEP, loss_cfg),
            rhythm_logits=out.get("rhythm_logits"),
        )
        metrics[variant] = {k: float(v) for k, v in m.items()}
        if variant == GRADIENT_LOSS:
            objective = value
    objective.backward()
    grads = {
        k: p.grad.detach().cpu().numpy().copy()
        for k, p in h.torch_model.named_parameters()
        if p.grad is not None
    }
    h.torch_model.zero_grad(set_to_none=True)
    return Pass({k: v.detach().cpu().numpy() for k, v in out.items()}, metrics, grads)


def check_outputs(h: Harness) -> Iterator[CheckResult]:
    got, ref = h.teacher_forced()
    errors = {
        k: _max_abs(got.outputs[k], ref.outputs[k])
        for k in ("logits", "mu", "sigma", "z", "z_dec", "adversary_prediction", "rhythm_logits")
        if k in ref.outputs
    }
    worst = max(errors, key=errors.get)
    yield CheckResult(
        "outputs",
        h.combo.name,
        errors[worst],
        OUTPUT_ATOL,
        errors[worst] <= OUTPUT_ATOL,
        f"worst: {worst}",
    )


def check_loss(h: Harness) -> Iterator[CheckResult]:
    got, ref = h.teacher_forced()
    for variant in LOSS_VARIANTS:
        errors = {
            k: _rel(got.metrics[variant][k], ref.metrics[variant][k])
            for k in ("loss", "recon", "kl", "kl_cost", "accuracy", *ATTRIBUTE_METRICS)
            if k in ref.metrics[variant]
        }
        worst = max(errors, key=errors.get)
        yield CheckResult(
            "loss",
            f"{h.combo.name} [{variant}]",
            errors[worst],
            LOSS_RTOL,
            errors[worst] <= LOSS_RTOL,
            f"relative; worst: {worst}",
        )


def check_gradients(h: Harness) -> Iterator[CheckResult]:
    yield _gradient_check("gradients", h.combo.name, *h.teacher_forced())


def check_scheduled_gradients(h: Harness) -> Iterator[CheckResult]:
    """The objective's gradient with scheduled sampling: the Flax model's sampling pass
    and teacher-forced second pass against torch's differentiated step loop."""
    got, ref = h.scheduled()
    yield _gradient_check("scheduled_gradients", h.combo.name, got, ref)


def _gradient_check(check: str, name: str, got: Pass, ref: Pass) -> CheckResult:
    missing = sorted(set(got.grads) ^ set(ref.grads))
    worst, worst_key = 0.0, ""
    for key, g in got.grads.items():
        if key not in ref.grads:
            continue
        scale = GRAD_SCALE * (1.0 + float(np.max(np.abs(ref.grads[key]))))
        ratio = _max_abs(g, ref.grads[key]) / scale
        if ratio > worst:
            worst, worst_key = ratio, key
    return CheckResult(
        check,
        name,
        worst * GRAD_SCALE,
        GRAD_SCALE,
        worst <= 1.0 and not missing,
        f"error / (1 + max|grad|); worst: {worst_key}"
        + (f"; gradients only on one side: {missing}" if missing else ""),
    )


@functools.cache
def _jitted_apply(config: ModelConfig, method: str = "__call__"):
    """A jitted `MusicVAE(config).apply` of one method (compiled once per configuration)."""
    model = MusicVAE(config)

    def apply(params, *args, **kwargs):
        return model.apply({"params": params}, *args, method=getattr(MusicVAE, method), **kwargs)

    return jax.jit(apply)


def check_scheduled_sampling(h: Harness) -> Iterator[CheckResult]:
    p, temperature = SCHEDULED_P, SCHEDULED_TEMPERATURE
    with torch.no_grad():
        ref = h.torch_model(
            h.t(h.tokens, torch.long),
            h.t(h.condition),
            h.t(h.eps),
            sampling_probability=p,
            choose_noise=h.t(h.choose_noise),
            gumbel=h.t(h.gumbel),
            temperature=temperature,
            token_keep=h.t(h.token_keep),
        )
    out = _jitted_apply(h.config)(
        h.params,
        h.j(h.tokens.astype(np.int32)),
        h.j(h.condition),
        h.j(h.eps),
        p,
        h.j(h.choose_noise),
        h.j(h.gumbel),
        temperature,
        token_keep=h.j(h.token_keep),
    )
    same_decisions = np.array_equal(np.asarray(out["fed_back"]), ref["fed_back"].cpu().numpy())
    same_samples = np.array_equal(np.asarray(out["sampled"]), ref["sampled"].cpu().numpy())
    error = _max_abs(out["logits"], ref["logits"].cpu().numpy())
    fed = int(np.asarray(out["fed_back"]).sum())
    yield CheckResult(
        "scheduled_sampling",
        h.combo.name,
        error,
        OUTPUT_ATOL,
        same_decisions and same_samples and error <= OUTPUT_ATOL and fed > 0,
        f"decisions {'equal' if same_decisions else 'DIFFER'}, samples "
        f"{'equal' if same_samples else 'DIFFER'}, {fed} fed back",
    )


def check_generation(h: Harness) -> Iterator[CheckResult]:
    z = h.eps
    for label, gumbel in (("sampled", h.gumbel), ("argmax", None)):
        with torch.no_grad():
            ref = h.torch_model.generate(h.t(z), h.t(h.condition), 0.7, h.t(gumbel))
        out = _jitted_apply(h.config, "generate")(
            h.params, h.j(z), h.j(h.condition), 0.7, h.j(gumbel)
        )
        mismatches = int(np.sum(np.asarray(out["tokens"]) != ref["tokens"].cpu().numpy()))
        yield CheckResult(
            "generation",
            f"{h.combo.name} [{label}]",
            float(mismatches),
            0.0,
            mismatches == 0,
            "differing tokens",
        )


def check_optimizer_steps(h: Harness) -> Iterator[CheckResult]:
    model_cfg = h.config
    loss_cfg = LossConfig(
        free_bits=0.5,
        max_beta=0.5,
        beta_rate=0.9,
        attribute_loss="regression",
        attribute_decorrelation=0.5,
    )
    optim_cfg = OptimConfig(learning_rate=3e-3, decay_rate=0.95, clip_norm=5.0)
    sampling_cfg = SamplingConfig(token_dropout=0.25)
    rng = np.random.default_rng(1)
    optimizer = torch_train.make_optimizer(h.torch_model, optim_cfg)
    h.torch_model.train()
    state = steps.create_state(model_cfg, optim_cfg, h.params)
    step_fn = jax.jit(
        functools.partial(steps.train_step, model=model_cfg, loss=loss_cfg, sampling=sampling_cfg),
        compiler_options=steps.TRAIN_STEP_COMPILER_OPTIONS,
    )
    for step in range(TRAIN_STEPS):
        tokens = rng.integers(0, model_cfg.input_depth, (BATCH, model_cfg.sequence_length))
        condition = rng.random(BATCH).astype(np.float32) if model_cfg.uses_condition else None
        eps = rng.standard_normal((BATCH, model_cfg.z_size)).astype(np.float32)
        keep = (rng.random(tokens.shape) >= sampling_cfg.token_dropout).astype(np.float32)
        attribute = rng.standard_normal(BATCH).astype(np.float32)
        torch_train.train_step(
            h.torch_model,
            optimizer,
            {
                "tokens": h.t(tokens, torch.long),
                "condition": h.t(condition),
                "attribute": h.t(attribute),
            },
            step,
            loss_cfg,
            optim_cfg,
            sampling_cfg,
            eps=h.t(eps),
            token_keep=h.t(keep),
        )
        batch = {"tokens": h.j(tokens.astype(np.int32)), "attribute": h.j(attribute)}
        if condition is not None:
            batch["condition"] = h.j(condition)
        state, _ = step_fn(
            state,
            batch,
            steps.Noise(h.j(eps), token_keep=h.j(keep)),
            schedules.beta(step, loss_cfg),
            schedules.sampling_probability(step, sampling_cfg),
            None,
        )
    h.torch_model.eval()
    got = flax_to_torch(jax.device_get(state.params), model_cfg)
    ref = h._state_dict_numpy()
    errors = {k: _max_abs(got[k], ref[k]) for k in ref}
    worst = max(errors, key=errors.get)
    yield CheckResult(
        "optimizer_steps",
        h.combo.name,
        errors[worst],
        PARAM_ATOL,
        errors[worst] <= PARAM_ATOL,
        f"{TRAIN_STEPS} Adam steps; worst: {worst}",
    )


CHECK_FUNCTIONS: dict[str, Callable[[Harness], Iterator[CheckResult]]] = {
    "outputs": check_outputs,
    "loss": check_loss,
    "gradients": check_gradients,
    "scheduled_sampling": check_scheduled_sampling,
    "scheduled_gradients": check_scheduled_gradients,
    "generation": check_generation,
    "optimizer_steps": check_optimizer_steps,
}


def configure_precision(device: str) -> None:
    """Full float32 on both sides (no TF32), so GPU results are comparable too."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    jax.config.update("jax_default_matmul_precision", "highest")
    del device


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices()):
        devices.append("cuda")
    return devices


def run_combination(
    combo: Combination, device: str = "cpu", checks: tuple[str, ...] = CHECKS
) -> list[CheckResult]:
    configure_precision(device)
    # The parity models are tiny: torch's thread pool costs far more than it saves.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        harness = Harness(combo, device)
        results = []
        for name in checks:
            results.extend(
                dataclasses.replace(r, device=device) for r in CHECK_FUNCTIONS[name](harness)
            )
    finally:
        torch.set_num_threads(threads)
    return results


def run_suite(
    device: str = "cpu",
    checks: tuple[str, ...] = CHECKS,
    selected: list[Combination] | None = None,
    progress: Callable[[Combination], None] | None = None,
) -> list[CheckResult]:
    results = []
    for combo in selected or combinations():
        if progress:
            progress(combo)
        results.extend(run_combination(combo, device, checks))
    return results
