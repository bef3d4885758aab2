"""Flax model: shapes per configuration, errors, loss, optimiser, conversion."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_musicvae import steps
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.conversion.parameters import (
    ConversionError,
    flax_to_torch,
    torch_shapes,
    torch_to_flax,
)
from jax_musicvae.losses import elbo_loss, kl_divergence
from jax_musicvae.models import MusicVAE, init_params


def tiny(**kwargs) -> ModelConfig:
    base = dict(
        encoder_hidden=6,
        encoder_layers=2,
        decoder_hidden=5,
        decoder_layers=2,
        latent_size=4,
        num_bars=2,
        steps_per_bar=3,
        input_depth=7,
    )
    return ModelConfig(**{**base, **kwargs})


CASES = [
    tiny(cell=cell, conditioning=cond, wiring=wiring, num_bars=bars)
    for cell, cond, wiring, bars in [
        ("lstm", "none", "original", 2),
        ("gru", "encoder", "original", 2),
        ("lstm", "latent", "original", 2),
        ("gru", "decoder", "original", 1),
        ("gru", "none", "magenta", 2),
        ("lstm", "encoder", "magenta", 2),
        ("gru", "latent", "magenta", 2),
        ("lstm", "decoder", "magenta", 1),
    ]
]


def _inputs(config: ModelConfig, batch: int = 3):
    tokens = jax.random.randint(
        jax.random.key(1), (batch, config.sequence_length), 0, config.input_depth
    )
    condition = jnp.linspace(0.1, 0.9, batch) if config.uses_condition else None
    return tokens, condition


@pytest.mark.parametrize(
    "config", CASES, ids=[f"{c.cell}-{c.conditioning}-{c.wiring}-{c.num_bars}" for c in CASES]
)
def test_shapes(config: ModelConfig) -> None:
    params = init_params(config, jax.random.key(0))
    model = MusicVAE(config)
    tokens, condition = _inputs(config)
    out = model.apply({"params": params}, tokens, condition)
    t, d = config.sequence_length, config.input_depth
    chex.assert_shape(out["logits"], (3, t, d))
    chex.assert_shape([out["mu"], out["sigma"], out["z"]], (3, config.z_size))
    chex.assert_shape(out["z_dec"], (3, config.decoder_code_size))
    chex.assert_tree_all_finite(out)
    if config.conditioning == "latent":
        np.testing.assert_allclose(out["z"][:, -1], condition, atol=1e-7)
    if config.conditioning == "decoder":
        np.testing.assert_allclose(out["z_dec"][:, -1], condition, atol=1e-7)
    generated = model.apply(
        {"params": params},
        out["z"][:2],
        None if condition is None else condition[:2],
        method=MusicVAE.generate,
    )
    chex.assert_shape(generated["tokens"], (2, t))
    assert int(generated["tokens"].max()) < d


def test_flat_decoder_has_no_conductor() -> None:
    params = init_params(tiny(num_bars=1, wiring="magenta"), jax.random.key(0))
    assert "conductor" not in params["decoder"]
    chex.assert_shape(params["decoder"]["core"]["l0"]["w_ih"], (7 + 4, 3 * 5 * 4 // 4 * 4 // 3))


def test_examples_are_independent() -> None:
    """The encoder summary is per example (the original's reshape mixed them)."""
    config = tiny(conditioning="encoder")
    params = init_params(config, jax.random.key(0))
    tokens, condition = _inputs(config, batch=4)
    model = MusicVAE(config)
    batch_mu, _ = model.apply({"params": params}, tokens, condition, method=MusicVAE.encode)
    alone_mu, _ = model.apply(
        {"params": params}, tokens[2:3], condition[2:3], method=MusicVAE.encode
    )
    np.testing.assert_allclose(batch_mu[2:3], alone_mu, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scheduled_sampling_trains_in_teacher_forcings_memory(cell: str) -> None:
    """Scheduled sampling's gradient holds no more XLA temporaries than teacher
    forcing's: its sampling pass saves nothing for the backward (until session 19 the
    step loop's own gradient held 11% more here for the LSTM)."""
    config = tiny(cell=cell, wiring="magenta", decoder_hidden=64, steps_per_bar=16)
    params = init_params(config, jax.random.key(0))
    batch = 16
    tokens, _ = _inputs(config, batch)
    shape = (batch, config.sequence_length)
    choose = jax.random.uniform(jax.random.key(3), shape)
    gumbel = jax.random.gumbel(jax.random.key(2), (*shape, config.input_depth))

    def loss(p, tokens, *noise):
        out = MusicVAE(config).apply({"params": p}, tokens, None, None, 0.5, *noise)
        return jnp.sum(jax.nn.log_softmax(out["logits"]) * jax.nn.one_hot(tokens, 7))

    def temporaries(*args):
        return jax.jit(jax.grad(loss)).lower(*args).compile().memory_analysis().temp_size_in_bytes

    assert temporaries(params, tokens, choose, gumbel) <= 1.02 * temporaries(params, tokens)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scheduled_sampling_samples_from_the_network_it_trains(cell: str) -> None:
    """With dropout, the sampling pass draws the masks the teacher-forced pass draws:
    every step's sample is the Gumbel argmax of the logits the loss reads."""
    config = tiny(cell=cell, wiring="magenta", decoder_hidden=32, decoder_layers=3, dropout=0.5)
    # Larger weights than torch's initialisation, so samples depend on the hidden states.
    params = jax.tree.map(lambda w: 4.0 * w, init_params(config, jax.random.key(0)))
    tokens, _ = _inputs(config, 16)
    shape = tokens.shape
    choose = jax.random.uniform(jax.random.key(3), shape)
    gumbel = jax.random.gumbel(jax.random.key(2), (*shape, config.input_depth))

    def run(deterministic: bool) -> dict[str, jax.Array]:
        return MusicVAE(config).apply(
            {"params": params},
            tokens,
            None,
            None,
            0.5,
            choose,
            gumbel,
            0.7,
            deterministic=deterministic,
            rngs={"dropout": jax.random.key(5)},
        )

    out = run(deterministic=False)
    np.testing.assert_array_equal(out["sampled"], jnp.argmax(out["logits"] / 0.7 + gumbel, -1))
    assert np.abs(np.asarray(out["logits"] - run(deterministic=True)["logits"])).max() > 0.01


def test_scheduled_sampling_with_p_zero_is_teacher_forcing() -> None:
    config = tiny(wiring="magenta")
    params = init_params(config, jax.random.key(0))
    tokens, _ = _inputs(config)
    model = MusicVAE(config)
    tf = model.apply({"params": params}, tokens)
    shape = (3, config.sequence_length)
    ss = model.apply(
        {"params": params},
        tokens,
        None,
        None,
        0.0,
        jnp.full(shape, 0.5),
        jax.random.gumbel(jax.random.key(2), (*shape, config.input_depth)),
    )
    np.testing.assert_allclose(ss["logits"], tf["logits"], atol=1e-6)
    assert not bool(ss["fed_back"].any())
    all_fed = model.apply(
        {"params": params}, tokens, None, None, 1.0, jnp.zeros(shape), jnp.zeros((*shape, 7))
    )
    # Every step but the bar starts is fed back when p = 1.
    expected = np.tile(np.arange(config.sequence_length) % config.steps_per_bar != 0, (3, 1))
    np.testing.assert_array_equal(all_fed["fed_back"], expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, p, c: m.apply(p, jnp.zeros((2, 5), jnp.int32)), r"tokens has shape \(2, 5\)"),
        (
            lambda m, p, c: m.apply(p, jnp.full((2, 6), 7, jnp.int32)),
            r"tokens must lie in \[0, 7\)",
        ),
        (lambda m, p, c: m.apply(p, jnp.zeros((2, 6), jnp.float32)), "tokens must be integers"),
        (lambda m, p, c: m.apply(p, jnp.zeros((2, 6), jnp.int32)), "condition .* is required"),
        (
            lambda m, p, c: m.apply(p, jnp.zeros((2, 6), jnp.int32), jnp.zeros(3)),
            r"condition has shape \(3,\), expected \[2\]",
        ),
        (
            lambda m, p, c: m.apply(
                p, jnp.zeros((2, 6), jnp.int32), jnp.zeros(2), jnp.zeros((2, 9))
            ),
            r"eps has shape \(2, 9\), expected \[2, 3\]",
        ),
        (
            lambda m, p, c: m.apply(
                p, jnp.zeros((2, 6), jnp.int32), jnp.zeros(2), None, 0.5, jnp.zeros((2, 6))
            ),
            "needs both choose_noise and gumbel",
        ),
    ],
)
def test_clear_errors(call, message: str) -> None:
    config = tiny(conditioning="decoder")
    params = {"params": init_params(config, jax.random.key(0))}
    with pytest.raises(ValueError, match=message):
        call(MusicVAE(config), params, config)


def test_loss_against_hand_computation() -> None:
    config = tiny()
    logits = jnp.zeros((2, 6, 7)).at[0, :, 3].set(2.0)
    tokens = jnp.full((2, 6), 3, jnp.int32)
    mu = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    sigma = jnp.array([[1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    loss_cfg = LossConfig(free_bits=0.5, max_beta=1.0)
    total, metrics = elbo_loss(logits, tokens, mu, sigma, loss_cfg, config, beta=0.3)
    ce_hit = -math.log(math.exp(2.0) / (math.exp(2.0) + 6))
    ce_flat = math.log(7.0)
    kl0 = 0.5 * (1.0 + 0.25 - 1 - 2 * math.log(0.5))
    kl = np.array([kl0, 0.0])
    kl_cost = np.maximum(kl - 0.5 * math.log(2), 0)
    recon = np.array([6 * ce_hit, 6 * ce_flat])
    assert float(metrics["recon"]) == pytest.approx(recon.mean(), rel=1e-6)
    assert float(metrics["kl"]) == pytest.approx(kl.mean(), rel=1e-6)
    assert float(metrics["kl_bits"]) == pytest.approx(kl.mean() / math.log(2), rel=1e-6)
    assert float(metrics["kl_cost"]) == pytest.approx(kl_cost.mean(), rel=1e-6)
    assert float(total) == pytest.approx(recon.mean() + 0.3 * kl_cost.mean(), rel=1e-6)
    assert float(metrics["elbo"]) == pytest.approx(-(recon + kl).mean(), rel=1e-6)
    # Ties at zero logits go to token 0, so only example 0 is right.
    assert float(metrics["accuracy"]) == pytest.approx(0.5)


def test_mask_excludes_steps() -> None:
    config = tiny()
    logits = jax.random.normal(jax.random.key(0), (2, 6, 7))
    tokens = jnp.zeros((2, 6), jnp.int32)
    mu, sigma = jnp.zeros((2, 4)), jnp.ones((2, 4))
    mask = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], jnp.float32)
    _, base = elbo_loss(logits, tokens, mu, sigma, LossConfig(), config, 1.0, mask)
    noisy = logits.at[0, 3:].set(100.0 * jnp.arange(7))  # changes only masked steps
    _, masked = elbo_loss(noisy, tokens, mu, sigma, LossConfig(), config, 1.0, mask)
    assert float(masked["recon"]) == pytest.approx(float(base["recon"]), rel=1e-6)
    assert float(masked["accuracy"]) == pytest.approx(float(base["accuracy"]), rel=1e-6)


def test_latent_condition_dimension_is_not_in_the_kl() -> None:
    config = tiny(conditioning="latent")
    mu = jnp.array([[0.0, 0.0, 0.0, 0.0, 0.9]])
    sigma = jnp.array([[1.0, 1.0, 1.0, 1.0, 0.0]])  # sigma 0 for c would give an infinite KL
    assert float(kl_divergence(mu[:, :4], sigma[:, :4])[0]) == 0.0
    logits, tokens = jnp.zeros((1, 6, 7)), jnp.zeros((1, 6), jnp.int32)
    _, metrics = elbo_loss(logits, tokens, mu, sigma, LossConfig(), config, 1.0)
    assert float(metrics["kl"]) == 0.0


def test_bernoulli_clamp_has_finite_gradient() -> None:
    config = tiny()
    loss_cfg = LossConfig(recon_loss="bernoulli")
    tokens = jnp.zeros((1, 6), jnp.int32)
    logits = jnp.zeros((1, 6, 7)).at[..., 0].set(200.0)  # softmax rounds to exactly 1

    def value(x):
        return elbo_loss(x, tokens, jnp.zeros((1, 4)), jnp.ones((1, 4)), loss_cfg, config, 1.0)[0]

    grad = jax.grad(value)(logits)
    chex.assert_tree_all_finite(grad)


def test_clipping_scales_and_zeroes() -> None:
    clip = steps.clip_or_zero(clip_norm=1.0, zero_norm=100.0)
    updates, _ = clip.update({"a": jnp.array([3.0, 4.0])}, clip.init(None))
    np.testing.assert_allclose(updates["a"], [0.6, 0.8], rtol=1e-6)
    updates, _ = clip.update({"a": jnp.array([0.3, 0.4])}, clip.init(None))
    np.testing.assert_allclose(updates["a"], [0.3, 0.4], rtol=1e-6)
    updates, _ = clip.update({"a": jnp.array([300.0, 400.0])}, clip.init(None))
    np.testing.assert_array_equal(updates["a"], [0.0, 0.0])


def test_learning_rate_schedule_matches_host_formula() -> None:
    optim = OptimConfig(learning_rate=1e-3, min_learning_rate=1e-5, decay_rate=0.99)
    schedule = steps.learning_rate_schedule(optim)
    assert float(schedule(jnp.asarray(50))) == pytest.approx((1e-3 - 1e-5) * 0.99**50 + 1e-5)
    assert isinstance(steps.make_optimizer(optim), optax.GradientTransformation)


def test_train_step_skips_non_finite_updates() -> None:
    config = tiny()
    state = steps.create_state(config, OptimConfig(), init_params(config, jax.random.key(0)))
    tokens, _ = _inputs(config)
    step = jax.jit(
        functools.partial(
            steps.train_step, model=config, loss=LossConfig(), sampling=SamplingConfig()
        )
    )
    bad = steps.Noise(jnp.full((3, config.z_size), jnp.nan))
    new, metrics = step(state, {"tokens": tokens}, bad, 1.0, 0.0, None)
    assert float(metrics["skipped"]) == 1.0
    chex.assert_trees_all_equal(new.params, state.params)
    assert int(new.step) == int(state.step)
    good = steps.Noise(jnp.zeros((3, config.z_size)))
    new, metrics = step(state, {"tokens": tokens}, good, 1.0, 0.0, None)
    assert float(metrics["skipped"]) == 0.0
    assert int(new.step) == 1
    assert not np.array_equal(
        new.params["decoder"]["out"]["bias"], state.params["decoder"]["out"]["bias"]
    )


@pytest.mark.parametrize("config", CASES, ids=[f"{c.conditioning}-{c.wiring}" for c in CASES])
def test_conversion_round_trip_is_bit_exact(config: ModelConfig) -> None:
    params = init_params(config, jax.random.key(3))
    state_dict = flax_to_torch(jax.device_get(params), config)
    assert {k: v.shape for k, v in state_dict.items()} == torch_shapes(config)
    back = torch_to_flax(state_dict, config)
    chex.assert_trees_all_equal(back, jax.device_get(params))
    again = flax_to_torch(back, config)
    assert all(np.array_equal(again[k], state_dict[k]) for k in state_dict)


def test_conversion_errors_name_the_key() -> None:
    config = tiny()
    state_dict = flax_to_torch(jax.device_get(init_params(config, jax.random.key(0))), config)
    broken = dict(state_dict)
    broken["decoder.out.0.bias"] = np.zeros(8, np.float32)
    with pytest.raises(ConversionError, match=r"decoder.out.0.bias has shape \(8,\)"):
        torch_to_flax(broken, config)
    del broken["decoder.out.0.bias"]
    with pytest.raises(ConversionError, match="missing \\['decoder.out.0.bias'\\]"):
        torch_to_flax(broken, config)
    with pytest.raises(ConversionError, match="missing"):
        torch_to_flax(state_dict, tiny(cell="gru"))


def test_token_dropout_zeroes_only_the_dropped_inputs() -> None:
    config = tiny(cell="lstm", wiring="magenta", num_bars=2, decoder_layers=1)
    tokens, _ = _inputs(config, batch=2)
    params = init_params(config, jax.random.key(0))
    model = MusicVAE(config)

    def logits(keep):
        return model.apply({"params": params}, tokens, token_keep=keep)["logits"]

    ones = jnp.ones(tokens.shape, jnp.float32)
    np.testing.assert_array_equal(logits(ones), logits(None))
    keep = ones.at[0, 2].set(0.0)  # drops the input of step 2 of example 0 only
    changed = np.any(np.asarray(logits(keep) != logits(None)), axis=-1)
    # Example 0 changes from step 2 to the end of its bar (steps 0-2), nothing else.
    expected = np.zeros(changed.shape, bool)
    expected[0, 2] = True
    np.testing.assert_array_equal(changed, expected)


def test_token_dropout_noise_keeps_the_other_streams() -> None:
    config = tiny()
    key = jax.random.key(3)
    plain = steps.draw_noise(key, 512, config, scheduled=True)
    dropped = steps.draw_noise(key, 512, config, scheduled=True, token_dropout=0.25)
    assert plain.token_keep is None
    for a, b in zip(plain[:3], dropped[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert abs(float(dropped.token_keep.mean()) - 0.75) < 0.02
    with pytest.raises(ValueError, match="token_dropout"):
        SamplingConfig(token_dropout=1.0)


def test_eval_step_reports_greedy_and_shuffled_reconstruction() -> None:
    config = tiny(cell="gru", wiring="magenta")
    params = init_params(config, jax.random.key(0))
    tokens, _ = _inputs(config, batch=4)
    eps = jnp.zeros((4, config.z_size))
    metrics = steps.eval_step(params, {"tokens": tokens}, eps, model=config, loss=LossConfig())
    model = MusicVAE(config)
    mu = model.apply({"params": params}, tokens, method=MusicVAE.encode)[0]

    def greedy(codes):
        decoded = model.apply({"params": params}, codes, method=MusicVAE.generate)["tokens"]
        return float(jnp.mean(decoded == tokens))

    assert float(metrics["greedy_accuracy"]) == pytest.approx(greedy(mu))
    assert float(metrics["shuffled_accuracy"]) == pytest.approx(greedy(jnp.roll(mu, 1, axis=0)))
    same = jnp.repeat(tokens[:1], 4, axis=0)
    metrics = steps.eval_step(params, {"tokens": same}, eps, model=config, loss=LossConfig())
    assert float(metrics["greedy_accuracy"]) == float(metrics["shuffled_accuracy"])
