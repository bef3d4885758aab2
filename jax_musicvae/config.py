"""Typed model and loss configuration shared by the Flax model and the torch reference.

Framework-free on purpose: `torch_reference` imports this module, and it must never
pull in jax. Every field is validated on construction so that a wrong value fails
with a message naming the field, not deep inside a traced function.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, TypeVar

Cell = Literal["lstm", "gru"]
Conditioning = Literal["none", "encoder", "latent", "decoder"]
Wiring = Literal["original", "magenta"]
ReconLoss = Literal["categorical", "bernoulli"]
SamplingSchedule = Literal["teacher_forcing", "constant", "exponential", "inverse_sigmoid"]
RnnGradient = Literal["custom", "autodiff"]
AttributeLoss = Literal["none", "regression", "sign"]

CELLS = ("lstm", "gru")
CONDITIONINGS = ("none", "encoder", "latent", "decoder")
WIRINGS = ("original", "magenta")
RECON_LOSSES = ("categorical", "bernoulli")
SAMPLING_SCHEDULES = ("teacher_forcing", "constant", "exponential", "inverse_sigmoid")
COMPUTE_DTYPES = ("float32", "bfloat16")
RNN_GRADIENTS = ("custom", "autodiff")
ATTRIBUTE_LOSSES = ("none", "regression", "sign")
# melody90's first note-on token (the rhythm decoder's targets are the tokens at or
# above it) and pianoroll61's depth (a representation without note-on tokens).
FIRST_NOTE_ON = 2
PIANOROLL61_DEPTH = 61


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the conditioned MusicVAE (see docs/architecture.md).

    `latent_size` is the size of the latent code the decoder receives. With
    conditioning `decoder` the encoder produces `latent_size - 1` dimensions and the
    danceability c is the last one; with `latent` c is appended to mu as one more
    dimension whose noise scale is `latent_condition_sigma`. The sizes derived from
    it, in the order data flows: `readout_size` (what the mu and sigma heads read),
    `head_size` (what they produce), `z_size` (z and eps) and `decoder_code_size`
    (what the decoder is fed).
    """

    cell: Cell = "lstm"
    encoder_hidden: int = 256
    encoder_layers: int = 2
    decoder_hidden: int = 256
    decoder_layers: int = 2
    latent_size: int = 128
    num_bars: int = 16
    steps_per_bar: int = 16
    input_depth: int = 90
    dropout: float = 0.0
    conditioning: Conditioning = "none"
    latent_condition_sigma: float = 0.0
    wiring: Wiring = "magenta"
    # 0: the mu and sigma heads read the encoder's final states; k > 0: they read
    # its outputs every k steps (forward at each k-step chunk's end, backward at its
    # start), so no single state has to remember the whole melody.
    encoder_readout_steps: int = 0
    compute_dtype: str = "float32"
    # Flax-side execution switches (the torch reference ignores them): the
    # recurrence's hand-written gradient or XLA's autodiff of the scan, and the
    # opt-in cuDNN LSTM for the encoder on GPUs (docs/benchmarks.md; it returns only
    # the final states, so it is not used with encoder_readout_steps > 0).
    rnn_gradient: RnnGradient = "custom"
    cudnn_encoder: bool = False
    # Hidden size of the attribute adversary (0: none), an MLP that predicts the
    # Gaussianised danceability from z through a gradient reversal
    # (LossConfig.attribute_adversary weighs it; docs/danceability-control.md).
    adversary_hidden: int = 0
    # > 0: the adversary's prediction is bound * tanh(output / bound), so the encoder's
    # reversed ascent of its squared error is bounded too: unbounded, it can grow z
    # without limit (docs/danceability-control.md, "A rhythm decoder").
    adversary_bound: float = 0.0
    # Hidden size of the rhythm decoder (0: none), an MLP from z's first
    # `rhythm_code_size` dimensions to one note-on logit per step (EC2-VAE's rhythm
    # decoder): the core decoder then reads each step's note-on flag beside its other
    # inputs, the truth in training and the rhythm decoder's (logit > 0) when it
    # decodes a code, so a melody's onsets, and with them its rhythm estimate, come
    # from those dimensions alone (docs/danceability-control.md).
    rhythm_hidden: int = 0
    rhythm_code_size: int = 16

    def __post_init__(self) -> None:
        _check_choice("cell", self.cell, CELLS)
        _check_choice("conditioning", self.conditioning, CONDITIONINGS)
        _check_choice("wiring", self.wiring, WIRINGS)
        _check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        _check_choice("rnn_gradient", self.rnn_gradient, RNN_GRADIENTS)
        for name in (
            "encoder_hidden",
            "encoder_layers",
            "decoder_hidden",
            "decoder_layers",
            "latent_size",
            "num_bars",
            "steps_per_bar",
            "input_depth",
        ):
            check_positive(name, getattr(self, name))
        if self.conditioning == "decoder" and self.latent_size < 2:
            raise ConfigError("latent_size must be >= 2 with conditioning='decoder'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1)")
        every = self.encoder_readout_steps
        if every < 0 or (every and self.sequence_length % every):
            raise ConfigError(
                f"encoder_readout_steps={every} must be 0 or divide the sequence length "
                f"{self.sequence_length}"
            )
        if self.latent_condition_sigma < 0.0:
            raise ConfigError("latent_condition_sigma must be >= 0")
        if self.adversary_hidden < 0:
            raise ConfigError("adversary_hidden must be >= 0 (0: no adversary)")
        if self.adversary_bound < 0:
            raise ConfigError("adversary_bound must be >= 0 (0: unbounded)")
        if self.rhythm_hidden < 0:
            raise ConfigError("rhythm_hidden must be >= 0 (0: no rhythm decoder)")
        if self.rhythm_hidden and not 1 <= self.rhythm_code_size <= self.head_size:
            raise ConfigError(
                f"rhythm_code_size={self.rhythm_code_size} must be in [1, {self.head_size}] "
                "(the encoded dimensions the rhythm decoder reads)"
            )
        if self.rhythm_hidden and self.input_depth == PIANOROLL61_DEPTH:
            raise ConfigError(
                "rhythm_hidden > 0 needs melody90 tokens (note-ons are tokens >= "
                f"{FIRST_NOTE_ON}); pianoroll61 (input_depth {PIANOROLL61_DEPTH}) has none"
            )

    @property
    def sequence_length(self) -> int:
        return self.num_bars * self.steps_per_bar

    @property
    def gates(self) -> int:
        """Number of stacked gate blocks in the fused weight matrices."""
        return 4 if self.cell == "lstm" else 3

    @property
    def hierarchical(self) -> bool:
        """The original wiring always has a conductor; magenta's is flat for one bar."""
        return self.wiring == "original" or self.num_bars > 1

    @property
    def head_size(self) -> int:
        """Size of mu and sigma as the heads produce them."""
        return self.latent_size - 1 if self.conditioning == "decoder" else self.latent_size

    @property
    def readout_size(self) -> int:
        """Size of the encoder readout the mu and sigma heads read (c appended for `encoder`)."""
        every = self.encoder_readout_steps
        chunks = self.sequence_length // every if every else 1
        return 2 * self.encoder_hidden * chunks + (1 if self.conditioning == "encoder" else 0)

    @property
    def z_size(self) -> int:
        """Size of z and eps: the heads' output, plus the condition's dimension for `latent`."""
        return self.head_size + (1 if self.conditioning == "latent" else 0)

    @property
    def decoder_code_size(self) -> int:
        """Size of the code the decoder is fed (z after z_embedding, with c if any)."""
        if self.wiring == "original":
            return self.latent_size
        return self.latent_size + (1 if self.conditioning == "latent" else 0)

    @property
    def uses_condition(self) -> bool:
        return self.conditioning != "none"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """ELBO, free bits and beta schedule (MusicVAE), or the original's Bernoulli loss."""

    recon_loss: ReconLoss = "categorical"
    target_smoothing: float = 0.0
    free_bits: float = 0.0
    max_beta: float = 1.0
    beta_rate: float = 0.0
    # Attribute regularisation (docs/danceability-control.md): tie latent dimension
    # `attribute_dimension` of z to the Gaussianised danceability t = Phi^-1(F(c)),
    # where F is the training split's empirical CDF, frozen in `attribute_quantiles`
    # (filled in by the trainer and stored with the config). `regression`:
    # weight * mean |z_r - t|; `sign`: AR-VAE's weight * mean over pairs
    # |tanh(scale (z_r,i - z_r,j)) - sign(t_i - t_j)|. `attribute_decorrelation`
    # adds weight * sum over the other dimensions of corr(z_k, t)^2 in the batch (over
    # all of z with attribute_loss 'none', for models that are given c instead).
    # `attribute_independence` adds weight * the normalised HSIC (a kernel measure
    # of any dependence, not only linear) between t and those same dimensions.
    # `attribute_adversary` adds weight * the mean squared error of the model's
    # adversary (ModelConfig.adversary_hidden), which predicts t from those
    # dimensions; a gradient reversal makes the encoder maximise what the adversary
    # minimises (Ganin & Lempitsky 2015; Fader networks, Lample et al. 2017).
    # `attribute_adversary_ramp` > 0 grows that weight linearly from 0 over so many
    # steps, as Fader networks do: under Adam the adversary learns at its usual rate
    # while the encoder is pushed ever harder (`schedules.adversary_weight`).
    attribute_loss: AttributeLoss = "none"
    attribute_weight: float = 1.0
    attribute_sign_scale: float = 10.0
    attribute_dimension: int = 0
    attribute_decorrelation: float = 0.0
    attribute_independence: float = 0.0
    attribute_adversary: float = 0.0
    attribute_adversary_ramp: int = 0
    attribute_quantiles: tuple[float, ...] = ()
    # With a rhythm decoder (ModelConfig.rhythm_hidden): weight of its loss, the
    # binary cross-entropy of each step's note-on, summed over steps (nats).
    rhythm_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("recon_loss", self.recon_loss, RECON_LOSSES)
        _check_choice("attribute_loss", self.attribute_loss, ATTRIBUTE_LOSSES)
        object.__setattr__(
            self, "attribute_quantiles", tuple(float(q) for q in self.attribute_quantiles)
        )
        weights = {
            name: getattr(self, name)
            for name in (
                "attribute_weight",
                "attribute_decorrelation",
                "attribute_independence",
                "attribute_adversary",
                "rhythm_weight",
            )
        }
        negative = [name for name, value in weights.items() if value < 0]
        if negative:
            raise ConfigError(f"{', '.join(negative)} must be >= 0")
        if self.attribute_sign_scale <= 0:
            raise ConfigError("attribute_sign_scale must be > 0")
        if self.attribute_dimension < 0:
            raise ConfigError("attribute_dimension must be >= 0")
        if self.attribute_adversary_ramp < 0:
            raise ConfigError("attribute_adversary_ramp must be >= 0 (0: no ramp)")
        quantiles = self.attribute_quantiles
        if any(b < a for a, b in zip(quantiles, quantiles[1:], strict=False)):
            raise ConfigError("attribute_quantiles must be sorted")
        if self.target_smoothing < 0.0:
            raise ConfigError("target_smoothing must be >= 0 (0 disables it)")
        if self.target_smoothing and self.recon_loss != "bernoulli":
            raise ConfigError("target_smoothing applies only to recon_loss='bernoulli'")
        if self.free_bits < 0.0:
            raise ConfigError("free_bits must be >= 0")
        if not 0.0 <= self.beta_rate <= 1.0:
            raise ConfigError("beta_rate must be in [0, 1]")

    @property
    def free_nats(self) -> float:
        return self.free_bits * math.log(2.0)

    @property
    def uses_attribute(self) -> bool:
        """Whether training needs the Gaussianised danceability of each window."""
        return (
            self.attribute_loss != "none"
            or self.attribute_decorrelation > 0
            or self.attribute_independence > 0
            or self.attribute_adversary > 0
        )

    @property
    def regularised_dimension(self) -> int | None:
        """The z dimension tied to the attribute, which the adversary does not see."""
        return None if self.attribute_loss == "none" else self.attribute_dimension


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with exponential learning-rate decay to a floor and global-norm clipping."""

    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    decay_rate: float = 0.9999
    clip_norm: float = 1.0
    zero_grad_norm: float = 1e4
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.min_learning_rate < 0:
            raise ConfigError("learning rates must be positive")
        if self.clip_norm <= 0 or self.zero_grad_norm <= 0:
            raise ConfigError("clip_norm and zero_grad_norm must be positive")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """What the decoder is fed in training: scheduled sampling and token dropout.

    Scheduled sampling feeds back a sample instead of the truth with a scheduled
    probability. `token_dropout` zeroes each previous-token input with that
    probability (word dropout, Bowman et al. 2016), so the decoder must read the
    melody from z rather than continue the tokens it is given.
    """

    schedule: SamplingSchedule = "teacher_forcing"
    rate: float = 0.0
    temperature: float = 1.0
    token_dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("schedule", self.schedule, SAMPLING_SCHEDULES)
        if self.schedule == "inverse_sigmoid" and self.rate < 1.0:
            raise ConfigError("inverse_sigmoid needs rate=k >= 1")
        if self.schedule in ("constant", "exponential") and not 0.0 <= self.rate <= 1.0:
            raise ConfigError(f"{self.schedule} needs rate in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ConfigError(f"token_dropout={self.token_dropout!r} must be in [0, 1)")


T = TypeVar("T")


def replace_checked(config: T, **changes: Any) -> T:
    """dataclasses.replace that names unknown fields instead of a TypeError."""
    known = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(
            f"unknown {type(config).__name__} field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
