"""ExperimentConfig: typed --set overrides, unknown keys, dict round trip, shipped configs."""

from __future__ import annotations

import pytest

from jax_musicvae.config import ConfigError
from jax_musicvae.experiment import CONFIGS_DIR, ExperimentConfig, load_config

CONFIG_NAMES = (
    "cpu_small",
    "cpu_hour",
    "cpu_16bar",
    "hierdec_mel_16bar",
    "mel_2bar",
    "thesis_gru_16bar",
    "bench_small",
)


def test_overrides_are_typed_by_the_field():
    config = ExperimentConfig().override(
        [
            "model.cell=gru",
            "model.latent_size=32",
            "optim.learning_rate=5e-4",
            "train.async_checkpoints=false",
            "mesh.model=2",
            "mesh.shard_params=true",
            "name=run7",
        ]
    )
    assert config.model.cell == "gru"
    assert config.model.latent_size == 32
    assert config.optim.learning_rate == pytest.approx(5e-4)
    assert config.train.async_checkpoints is False
    assert config.mesh.shard_params is True
    assert config.name == "run7"


def test_overrides_are_checked_across_sections_once_in_any_order():
    small = load_config("cpu_small")
    adversary = small.override(["model.adversary_hidden=64", "loss.attribute_adversary=1"])
    for order in (1, -1):
        plain = adversary.override(
            ["model.adversary_hidden=0", "loss.attribute_adversary=0"][::order]
        )
        assert (plain.model.adversary_hidden, plain.loss.attribute_adversary) == (0, 0.0)
    with pytest.raises(ConfigError, match="set model.adversary_hidden > 0"):
        adversary.override(["model.adversary_hidden=0"])
    # Within a section too: cpu_small's rhythm decoder reads 16 dimensions, so a smaller
    # code is valid only together with turning it off, in either order.
    for order in (1, -1):
        tiny = small.override(["model.latent_size=4", "model.rhythm_hidden=0"][::order])
        assert (tiny.model.latent_size, tiny.model.rhythm_hidden) == (4, 0)
    with pytest.raises(ConfigError, match="rhythm_code_size=16 must be in"):
        small.override(["model.latent_size=4"])
    twice = small.override(["loss.free_bits=8", "loss.max_beta=0.5", "loss.free_bits=16"])
    assert (twice.loss.free_bits, twice.loss.max_beta) == (16.0, 0.5)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("model.cel=gru", "unknown config key 'model.cel'"),
        ("modl.cell=gru", "unknown config key 'modl.cell'"),
        ("model.cell.x=1", "model.cell.x"),
        ("model=3", "model is a section"),
        ("model.latent_size=big", "model.latent_size='big': expected int"),
        ("train.async_checkpoints=maybe", "expected bool"),
        ("model.cell=rnn", "cell='rnn' is not one of lstm, gru"),
        ("model.cell", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        ExperimentConfig().override([assignment])


def test_dict_round_trip_and_unknown_fields():
    config = ExperimentConfig().override(["model.conditioning=latent", "train.seed=3"])
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    values = config.to_dict()
    values["train"]["epochs"] = 3
    with pytest.raises(ConfigError, match="train.epochs"):
        ExperimentConfig.from_dict(values)
    with pytest.raises(ConfigError, match="'optimizer'"):
        ExperimentConfig.from_dict({"optimizer": {}})


def test_configs_of_older_checkpoints_load_without_retired_fields():
    config = ExperimentConfig().override(["model.cell=gru"])
    values = config.to_dict()
    values["model"]["remat_scheduled_steps"] = True  # a switch until session 19
    assert ExperimentConfig.from_dict(values) == config


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_shipped_configs_load_by_name_and_path(name):
    config = load_config(name)
    assert config.name == name
    assert load_config(CONFIGS_DIR / f"{name}.py") == config
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_config_specifics():
    small = load_config("cpu_small")
    assert small.model.hierarchical and small.model.input_depth == 90
    bench = load_config("bench_small").model
    assert (bench.cell, bench.encoder_hidden, bench.encoder_layers) == ("lstm", 256, 2)
    assert (bench.decoder_hidden, bench.decoder_layers, bench.latent_size) == (256, 2, 128)
    assert (bench.num_bars, bench.steps_per_bar, bench.conditioning) == (16, 16, "none")
    mel = load_config("mel_2bar")
    assert not mel.model.hierarchical and mel.model.sequence_length == 32
    assert mel.sampling.schedule == "inverse_sigmoid"
    thesis = load_config("thesis_gru_16bar")
    assert (thesis.model.cell, thesis.model.input_depth) == ("gru", 61)
    assert thesis.model.uses_condition and thesis.loss.recon_loss == "bernoulli"


def test_missing_config_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError, match="cpu_small"):
        load_config("no_such_config")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="has no get_config"):
        load_config(bad)
