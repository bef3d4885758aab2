"""The rhythm decoder (model.rhythm_hidden): what it reads, what the core reads from it,
its loss, and that training with it learns the note-ons (parity: parity_tests)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from jax_musicvae import steps
from jax_musicvae.config import FIRST_NOTE_ON, ConfigError, LossConfig, ModelConfig
from jax_musicvae.conversion.parameters import flax_to_torch, torch_to_flax
from jax_musicvae.data.representations import REPRESENTATIONS
from jax_musicvae.losses import elbo_loss
from jax_musicvae.models import MusicVAE, init_params, note_ons
from jax_musicvae.train import train

CONFIG = ModelConfig(
    encoder_hidden=8,
    encoder_layers=1,
    decoder_hidden=8,
    decoder_layers=1,
    latent_size=6,
    num_bars=2,
    steps_per_bar=4,
    input_depth=90,
    wiring="magenta",
    rhythm_hidden=5,
    rhythm_code_size=2,
)


def _tokens(batch: int = 4) -> jax.Array:
    """Random tokens, about half of them note-ons."""
    tokens = jax.random.randint(jax.random.key(1), (batch, CONFIG.sequence_length), 0, 90)
    held = jax.random.bernoulli(jax.random.key(2), 0.5, tokens.shape)
    return jnp.where(held, 0, tokens)


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="rhythm_hidden must be >= 0"):
        dataclasses.replace(CONFIG, rhythm_hidden=-1)
    with pytest.raises(ConfigError, match=r"rhythm_code_size=7 must be in \[1, 6\]"):
        dataclasses.replace(CONFIG, rhythm_code_size=7)
    with pytest.raises(ConfigError, match="pianoroll61"):
        dataclasses.replace(CONFIG, input_depth=61)
    with pytest.raises(ConfigError, match="rhythm_weight must be >= 0"):
        LossConfig(rhythm_weight=-1.0)


def test_note_ons_are_melody90_note_on_tokens() -> None:
    melody90 = REPRESENTATIONS["melody90"]
    assert melody90.first_note_on == FIRST_NOTE_ON
    tokens = jnp.array([[melody90.no_event, melody90.note_off, FIRST_NOTE_ON, 89]])
    assert note_ons(tokens).tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_the_rhythm_decoder_reads_only_its_dimensions() -> None:
    params = init_params(CONFIG, jax.random.key(0))
    model = MusicVAE(CONFIG)
    z = jax.random.normal(jax.random.key(2), (3, CONFIG.z_size))

    def logits(codes):
        return model.apply({"params": params}, codes, method=lambda m, c: m.rhythm(c))

    jacobian = jax.jacobian(lambda c: logits(c[None])[0])(z[0])  # [T, z_size]
    assert jacobian.shape == (CONFIG.sequence_length, CONFIG.z_size)
    assert np.all(np.abs(np.asarray(jacobian[:, 2:])) == 0.0)
    assert np.any(np.abs(np.asarray(jacobian[:, :2])) > 1e-4)


def _with_rhythm_bias(params, value: float):
    """The rhythm decoder saying note-on (value > 0) or not at every step, whatever z."""
    rhythm = params["rhythm"]
    output = {
        "kernel": jnp.zeros_like(rhythm["output"]["kernel"]),
        "bias": jnp.full_like(rhythm["output"]["bias"], value),
    }
    return {**params, "rhythm": {**rhythm, "output": output}}


def test_decoding_reads_the_rhythm_decoders_note_ons() -> None:
    params = init_params(CONFIG, jax.random.key(0))
    # A note-on row in the core's input projection loud enough to decide every step.
    core = params["decoder"]["core"]["l0"]
    w_ih = core["w_ih"].at[CONFIG.input_depth].set(50.0)
    params = jax.tree.map(lambda x: x, params)
    params["decoder"]["core"]["l0"] = {**core, "w_ih": w_ih}
    model = MusicVAE(CONFIG)
    z = jax.random.normal(jax.random.key(2), (4, CONFIG.z_size))
    decoded = {
        value: np.asarray(
            model.apply({"params": _with_rhythm_bias(params, value)}, z, method=MusicVAE.generate)[
                "tokens"
            ]
        )
        for value in (10.0, -10.0)
    }
    assert not np.array_equal(decoded[10.0], decoded[-10.0])
    # Teacher forcing reads the true note-ons unless asked for the predicted ones (none
    # here), so the two differ exactly at the steps with a true note-on.
    tokens = _tokens()
    never = _with_rhythm_bias(params, -10.0)

    def teacher_forced(predicted: bool) -> np.ndarray:
        out = model.apply({"params": never}, tokens, predicted_onsets=predicted)
        return np.asarray(out["logits"])

    differs = np.any(teacher_forced(True) != teacher_forced(False), axis=-1)
    assert differs[:, 0].tolist() == (np.asarray(tokens)[:, 0] >= FIRST_NOTE_ON).tolist()
    assert differs.any()


def test_the_loss_adds_the_weighted_note_on_cross_entropy() -> None:
    params = init_params(CONFIG, jax.random.key(0))
    tokens = _tokens()
    out = MusicVAE(CONFIG).apply({"params": params}, tokens)
    logits = np.asarray(out["rhythm_logits"], np.float64)
    onsets = np.asarray(tokens) >= FIRST_NOTE_ON
    p = 1.0 / (1.0 + np.exp(-logits))
    by_hand = -np.mean(np.sum(np.where(onsets, np.log(p), np.log1p(-p)), axis=-1))

    def loss(weight: float):
        return elbo_loss(
            out["logits"],
            tokens,
            out["mu"],
            out["sigma"],
            LossConfig(rhythm_weight=weight),
            CONFIG,
            1.0,
            rhythm_logits=out["rhythm_logits"],
        )

    total0, metrics = loss(0.0)
    total2, _ = loss(2.0)
    assert float(metrics["rhythm"]) == pytest.approx(by_hand, rel=1e-5)
    assert float(metrics["rhythm_accuracy"]) == pytest.approx(np.mean((logits > 0) == onsets))
    assert float(total2 - total0) == pytest.approx(2.0 * by_hand, rel=1e-4)
    with pytest.raises(ValueError, match="rhythm_logits"):
        elbo_loss(out["logits"], tokens, out["mu"], out["sigma"], LossConfig(), CONFIG, 1.0)


def test_eval_reconstructs_with_the_predicted_note_ons() -> None:
    params = _with_rhythm_bias(init_params(CONFIG, jax.random.key(0)), -10.0)
    tokens = _tokens()
    eps = jnp.zeros((4, CONFIG.z_size))
    metrics = steps.eval_step(params, {"tokens": tokens}, eps, model=CONFIG, loss=LossConfig())
    out = MusicVAE(CONFIG).apply({"params": params}, tokens, eps, predicted_onsets=True)
    accuracy = float(jnp.mean(jnp.argmax(out["logits"], -1) == tokens))
    assert float(metrics["accuracy"]) == pytest.approx(accuracy)
    never_on = 1.0 - float(jnp.mean(note_ons(tokens)))
    assert float(metrics["rhythm_accuracy"]) == pytest.approx(never_on)


def test_conversion_round_trip_keeps_the_rhythm_decoder() -> None:
    params = jax.device_get(init_params(CONFIG, jax.random.key(3)))
    state_dict = flax_to_torch(params, CONFIG)
    assert state_dict["rhythm.output.weight"].shape == (CONFIG.sequence_length, 5)
    back = torch_to_flax(state_dict, CONFIG)
    assert np.array_equal(back["rhythm"]["hidden"]["kernel"], params["rhythm"]["hidden"]["kernel"])


def test_training_learns_the_note_ons(train_dataset, tmp_path) -> None:
    config = tiny_config(num_steps=40, log_every=1, eval_every=40, eval_batches=1).override(
        ["model.rhythm_code_size=2", "model.rhythm_hidden=16"]
    )
    train(config, train_dataset, tmp_path)
    logged = [
        json.loads(line)
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ]
    first, last = (
        np.mean([r["rhythm"] for r in logged[:5]]),
        np.mean([r["rhythm"] for r in logged[-5:]]),
    )
    assert last < 0.8 * first, (first, last)
    assert np.mean([r["rhythm_accuracy"] for r in logged[-5:]]) > 0.75
