"""Configuration validation and schedules (framework-free)."""

from __future__ import annotations

import math

import pytest

from jax_musicvae import schedules
from jax_musicvae.config import (
    ConfigError,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SamplingConfig,
    replace_checked,
)


def test_sizes_per_conditioning() -> None:
    base = dict(encoder_hidden=8, latent_size=6)
    none = ModelConfig(**base)
    assert (none.head_size, none.z_size, none.readout_size) == (6, 6, 16)
    enc = ModelConfig(conditioning="encoder", **base)
    assert (enc.head_size, enc.z_size, enc.readout_size) == (6, 6, 17)
    lat = ModelConfig(conditioning="latent", **base)
    assert (lat.head_size, lat.z_size) == (6, 7)
    assert lat.decoder_code_size == 7
    assert ModelConfig(conditioning="latent", wiring="original", **base).decoder_code_size == 6
    dec = ModelConfig(conditioning="decoder", **base)
    assert (dec.head_size, dec.z_size, dec.decoder_code_size) == (5, 5, 6)


def test_flat_only_for_magenta_single_bar() -> None:
    assert not ModelConfig(num_bars=1, wiring="magenta").hierarchical
    assert ModelConfig(num_bars=1, wiring="original").hierarchical
    assert ModelConfig(num_bars=2, wiring="magenta").hierarchical


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "rnn"}, "cell='rnn' is not one of lstm, gru"),
        ({"conditioning": "tempo"}, "conditioning='tempo'"),
        ({"wiring": "paper"}, "wiring='paper'"),
        ({"latent_size": 0}, "latent_size=0 must be a positive integer"),
        ({"num_bars": 2.5}, "num_bars=2.5"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"compute_dtype": "float16"}, "compute_dtype='float16'"),
        ({"conditioning": "decoder", "latent_size": 1}, "latent_size must be >= 2"),
    ],
)
def test_bad_model_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kwargs)


def test_bad_loss_and_sampling_values_are_named() -> None:
    with pytest.raises(ConfigError, match="recon_loss='mse'"):
        LossConfig(recon_loss="mse")
    with pytest.raises(ConfigError, match="target_smoothing applies only"):
        LossConfig(target_smoothing=5.0)
    with pytest.raises(ConfigError, match="inverse_sigmoid needs rate=k >= 1"):
        SamplingConfig(schedule="inverse_sigmoid", rate=0.5)
    with pytest.raises(ConfigError, match="schedule='linear'"):
        SamplingConfig(schedule="linear")


def test_replace_checked_names_unknown_fields() -> None:
    config = replace_checked(ModelConfig(), cell="gru")
    assert config.cell == "gru"
    with pytest.raises(ConfigError, match="unknown ModelConfig field.*hiden"):
        replace_checked(ModelConfig(), hiden=3)


def test_beta_schedule() -> None:
    loss = LossConfig(max_beta=0.2, beta_rate=0.99)
    assert schedules.beta(0, loss) == 0.0
    assert schedules.beta(100, loss) == pytest.approx(0.2 * (1 - 0.99**100))
    assert schedules.beta(10, LossConfig(max_beta=0.2, beta_rate=0.0)) == pytest.approx(0.2)


def test_sampling_schedules() -> None:
    assert schedules.sampling_probability(500, SamplingConfig()) == 0.0
    constant = SamplingConfig(schedule="constant", rate=0.3)
    assert schedules.sampling_probability(9, constant) == 0.3
    exponential = SamplingConfig(schedule="exponential", rate=0.999)
    assert schedules.sampling_probability(1000, exponential) == pytest.approx(1 - 0.999**1000)
    inverse = SamplingConfig(schedule="inverse_sigmoid", rate=1000.0)
    for step in (0, 1000, 5000, 20000):
        expected = 1 - 1000 / (1000 + math.exp(step / 1000))
        assert schedules.sampling_probability(step, inverse) == pytest.approx(expected, rel=1e-12)
    # Far past the point where exp(step / k) overflows, the probability is exactly 1.
    assert schedules.sampling_probability(10**7, inverse) == 1.0


def test_learning_rate_decays_to_floor() -> None:
    optim = OptimConfig(learning_rate=1e-3, min_learning_rate=1e-5, decay_rate=0.9999)
    assert schedules.learning_rate(0, optim) == pytest.approx(1e-3)
    assert schedules.learning_rate(10_000, optim) == pytest.approx(
        (1e-3 - 1e-5) * 0.9999**10_000 + 1e-5
    )
    assert schedules.learning_rate(10**7, optim) == pytest.approx(1e-5)
