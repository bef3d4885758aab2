"""`musicvae convert`: safe reading, config inference, atomic output, verification, round trips.

Fixtures are built here: state dicts of the five original magenta-torch classes
(names and shapes from seed-implementation.md at a tiny size), a whole pickled
module made from stand-in classes registered as `src.model` / `src.layers` and
removed again before loading, its trainer_states.pt, a malicious pickle, and
truncated and wrong files. Sequences are 2 bars of 2 steps to keep runs short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import traverse_util
from helpers import run_cli
from original_checkpoints import ORIGINAL_CLASSES, original_table
from safetensors.numpy import load_file
from torch import nn

from jax_musicvae import checkpoints
from jax_musicvae.commands import convert as convert_command
from jax_musicvae.config import ModelConfig
from jax_musicvae.conversion import pipeline as conversion
from jax_musicvae.conversion.parameters import ConversionError, flax_to_torch
from jax_musicvae.conversion.torch_files import (
    TorchFileError,
    UnsafePickleError,
    load_torch_checkpoint,
    restricted_load,
)
from torch_reference.model import MusicVAE as TorchMusicVAE

HE, HD, L, D = 4, 3, 5, 7  # encoder hidden, decoder hidden, latent, input depth
SMALL = ["--set", "model.num_bars=2", "--set", "model.steps_per_bar=2"]
SMALL_SETS = ["model.num_bars=2", "model.steps_per_bar=2"]


def seed_table(name: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an original class's state dict at this file's small size."""
    return original_table(*ORIGINAL_CLASSES[name], HE, HD, L, D)


def random_state_dict(table: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.5 * torch.randn(shape, generator=g) for k, shape in table.items()}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and np.array_equal(x, y), key


def verification_figure(text: str) -> float:
    match = re.search(r"teacher-forced logits = (\S+) \(tolerance", text)
    assert match, text
    return float(match.group(1))


def no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# -- state dicts of the original classes ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(ORIGINAL_CLASSES))
def test_original_state_dict_inferred_converted_and_verified(name, tmp_path, capsys):
    cell, conditioning = ORIGINAL_CLASSES[name]
    state_dict = random_state_dict(seed_table(name))
    src = tmp_path / "model.pt"
    torch.save(state_dict, src)

    assert run_cli("convert", src, tmp_path / "out", "--from", "magenta-torch", *SMALL) == 0
    out = capsys.readouterr().out
    difference = verification_figure(out)
    assert difference < 1e-4
    config, params = checkpoints.load_params(tmp_path / "out")
    model = config["model"]
    assert (model["cell"], model["conditioning"], model["wiring"]) == (
        cell,
        conditioning,
        "original",
    )
    assert (model["encoder_hidden"], model["decoder_hidden"]) == (HE, HD)
    assert (model["encoder_layers"], model["decoder_layers"]) == (2, 2)
    assert (model["latent_size"], model["input_depth"]) == (L, D)
    assert (model["num_bars"], model["steps_per_bar"]) == (2, 2)
    if conditioning == "latent":
        assert model["latent_condition_sigma"] == 1.0
    back = flax_to_torch(checkpoints.to_numpy(params), ModelConfig(**model))
    assert_same_tensors(back, {k: v.numpy() for k, v in state_dict.items()})


def test_unrecorded_settings_default_and_are_reported():
    state_dict = {k: v.numpy() for k, v in random_state_dict(seed_table("ZDanceVAE")).items()}
    experiment, notes = conversion.infer_config(state_dict, "torch")
    assert (experiment.model.num_bars, experiment.model.steps_per_bar) == (16, 16)
    assert experiment.model.conditioning == "decoder" and experiment.model.latent_size == L
    assert any("num_bars=16, steps_per_bar=16" in note for note in notes)


def test_adversary_and_rhythm_decoder_are_inferred():
    cfg = ModelConfig(
        encoder_hidden=HE,
        decoder_hidden=HD,
        latent_size=L,
        input_depth=D,
        num_bars=4,
        steps_per_bar=16,
        adversary_hidden=5,
        adversary_bound=3.0,
        rhythm_hidden=7,
        rhythm_code_size=3,
    )
    torch.manual_seed(0)
    state_dict = {k: v.numpy() for k, v in TorchMusicVAE(cfg).state_dict().items()}
    experiment, notes = conversion.infer_config(state_dict, "torch")
    model = experiment.model
    assert (model.adversary_hidden, model.rhythm_hidden, model.rhythm_code_size) == (5, 7, 3)
    assert (model.num_bars, model.steps_per_bar, model.adversary_bound) == (4, 16, 0.0)
    assert any("from the rhythm decoder" in note for note in notes)
    assert any("adversary_bound=0.0" in note for note in notes)
    assert dataclasses.replace(model, adversary_bound=3.0) == cfg


def test_latent_sigma_is_refused_unless_known(tmp_path, capsys):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("MuDanceVAE")), src)
    assert run_cli("convert", src, tmp_path / "out", *SMALL, "--no-verify") == 2
    assert "latent_condition_sigma" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    sets = [*SMALL, "--set", "model.latent_condition_sigma=0.5", "--no-verify"]
    assert run_cli("convert", src, tmp_path / "out", *sets) == 0
    config, _ = checkpoints.load_params(tmp_path / "out")
    assert config["model"]["latent_condition_sigma"] == 0.5


def test_magenta_wiring_latent_vs_decoder_is_ambiguous(tmp_path, capsys):
    cfg = ModelConfig(
        cell="lstm",
        encoder_hidden=HE,
        decoder_hidden=HD,
        latent_size=L,
        input_depth=D,
        num_bars=2,
        steps_per_bar=2,
        conditioning="decoder",
        wiring="magenta",
    )
    torch.manual_seed(0)
    src = tmp_path / "ref.pt"
    torch.save(TorchMusicVAE(cfg).state_dict(), src)
    assert run_cli("convert", src, tmp_path / "a", *SMALL, "--no-verify") == 2
    out = capsys.readouterr().out
    assert (
        "ambiguous" in out and "latent (latent_size=4)" in out and "decoder (latent_size=5)" in out
    )
    assert (
        run_cli("convert", src, tmp_path / "a", *SMALL, "--set", "model.conditioning=decoder") == 0
    )
    assert verification_figure(capsys.readouterr().out) < 1e-4
    config, _ = checkpoints.load_params(tmp_path / "a")
    assert config["model"]["conditioning"] == "decoder" and config["model"]["latent_size"] == L


def test_shape_mismatch_is_named(tmp_path, capsys):
    state_dict = random_state_dict(seed_table("MusicGRUVAE"))
    state_dict["decoder.out.0.bias"] = torch.zeros(D + 1)
    src = tmp_path / "model.pt"
    torch.save(state_dict, src)
    assert run_cli("convert", src, tmp_path / "out", *SMALL) == 2
    out = capsys.readouterr().out
    assert str(src) in out and "decoder.out.0.bias is (8,), expected (7,)" in out
    assert not (tmp_path / "out").exists()
    # A stored or user setting that contradicts the weights is refused the same way.
    good = tmp_path / "good.pt"
    torch.save(random_state_dict(seed_table("MusicGRUVAE")), good)
    assert (
        run_cli("convert", good, tmp_path / "out", *SMALL, "--set", "model.encoder_hidden=6") == 2
    )
    assert "encoder.bigru.weight_hh_l0" in capsys.readouterr().out


# -- whole pickled modules -----------------------------------------------------------------


@contextlib.contextmanager
def original_modules():
    """Temporary `src.model` / `src.layers` modules with classes shaped like the original's."""
    src, model_mod, layers_mod = (types.ModuleType(n) for n in ("src", "src.model", "src.layers"))
    src.model, src.layers = model_mod, layers_mod

    class BiGRUEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bigru = nn.GRU(D, HE, num_layers=2, batch_first=True, bidirectional=True)
            self.mu = nn.Linear(2 * HE, L)
            self.sigma = nn.Linear(2 * HE, L)
            self.softplus = nn.Softplus()
            self.device = torch.device("cpu")
            self.hidden_size = HE

    class HierarchicalGRUDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conductor = nn.GRU(L, HD, num_layers=2, batch_first=True)
            self.conductor_embeddings = nn.Sequential(nn.Linear(HD, L), nn.Tanh())
            self.gru = nn.GRU(D + L, HD, num_layers=2, batch_first=True)
            self.out = nn.Sequential(nn.Linear(HD, D), nn.Softmax(dim=-1))
            self.dropout = nn.Dropout(0.1)

    class MusicGRUVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = BiGRUEncoder()
            self.z_embedding = nn.Sequential(nn.Linear(L, L), nn.Tanh())
            self.decoder = HierarchicalGRUDecoder()

    def lr_multiplier(step: int) -> float:
        return 0.001 + 0.999 * 0.9999**step

    for module, obj in (
        (layers_mod, BiGRUEncoder),
        (layers_mod, HierarchicalGRUDecoder),
        (model_mod, MusicGRUVAE),
        (model_mod, lr_multiplier),
    ):
        obj.__module__ = module.__name__
        obj.__qualname__ = obj.__name__
        setattr(module, obj.__name__, obj)
    saved = {n: sys.modules.get(n) for n in ("src", "src.model", "src.layers")}
    sys.modules.update({"src": src, "src.model": model_mod, "src.layers": layers_mod})
    try:
        yield model_mod
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


@pytest.fixture
def pickled_module(tmp_path):
    """checkpoints/<run>/model.pt (torch.save(model)) and trainer_states.pt, classes gone after."""
    folder = tmp_path / "run_2022"
    folder.mkdir()
    with original_modules() as src_model:
        torch.manual_seed(0)
        model = src_model.MusicGRUVAE()
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, src_model.lr_multiplier)
        sum(p.square().sum() for p in model.parameters()).backward()
        optimizer.step()
        scheduler.step()
        torch.save(model, folder / "model.pt")
        torch.save({"optimizer": optimizer, "scheduler": scheduler}, folder / "trainer_states.pt")
        expected = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(ImportError):
        __import__("src.model")
    return folder, expected


def test_whole_module_pickle_read_with_stand_ins(pickled_module):
    folder, expected = pickled_module
    checkpoint = load_torch_checkpoint(folder / "model.pt")
    assert checkpoint.kind == "module_pickle"
    assert checkpoint.class_name == "src.model.MusicGRUVAE"
    assert_same_tensors(checkpoint.state_dict, expected)
    states = checkpoint.trainer_states
    assert states["optimizer"]["class"] == "torch.optim.adam.Adam"
    assert states["optimizer"]["param_groups"][0]["initial_lr"] == 5e-4
    assert states["optimizer"]["parameter_states"] == len(expected)
    assert states["optimizer"]["step"] == 1.0
    assert states["scheduler"]["class"] == "torch.optim.lr_scheduler.LambdaLR"
    assert states["scheduler"]["last_epoch"] == 1
    assert "src" not in sys.modules


def test_whole_module_pickle_converts_from_its_folder(pickled_module, tmp_path, capsys):
    folder, expected = pickled_module
    assert run_cli("convert", folder, tmp_path / "out", *SMALL) == 0
    out = capsys.readouterr().out
    assert "magenta-torch, module_pickle of src.model.MusicGRUVAE" in out
    assert "trainer states" in out and "torch.optim.adam.Adam" in out
    assert verification_figure(out) < 1e-4
    config, params = checkpoints.load_params(tmp_path / "out")
    back = flax_to_torch(checkpoints.to_numpy(params), ModelConfig(**config["model"]))
    assert_same_tensors(back, expected)


def test_truncated_tensor_record_in_module_pickle(pickled_module, tmp_path):
    folder, _ = pickled_module
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(folder / "model.pt") as original, zipfile.ZipFile(damaged, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            copy.writestr(item, data[:5] if item.filename.endswith("data/0") else data)
    with pytest.raises(TorchFileError, match=r"data/0 holds 5 bytes, \d+ expected \(truncated"):
        load_torch_checkpoint(damaged)


# -- malicious, truncated and wrong files --------------------------------------------------


class Exploit:
    """Pickles to a call of os.system that would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_state_dict_is_refused_and_has_no_effect(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = tmp_path / "model.pt"
    state_dict = random_state_dict(seed_table("MusicGRUVAE"))
    torch.save({**state_dict, "encoder.mu.bias": Exploit(marker)}, src)
    assert run_cli("convert", src, tmp_path / "out", *SMALL) == 2
    out = capsys.readouterr().out
    assert str(src) in out and "system" in out and "nothing from this file was executed" in out
    # The restricted unpickler, used without torch, refuses it just the same.
    with pytest.raises(UnsafePickleError, match=r"references (posix|os)\.system"):
        restricted_load(src)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_malicious_module_pickle_is_refused_and_has_no_effect(pickled_module, tmp_path):
    folder, _ = pickled_module
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    with original_modules() as src_model:
        model = src_model.MusicGRUVAE()
        model.payload = Exploit(marker)
        torch.save(model, src)
    with pytest.raises(UnsafePickleError, match=r"evil\.pt: refused to load.*system"):
        load_torch_checkpoint(src)
    assert not marker.exists()


def test_truncated_file(tmp_path, capsys):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("MusicLSTMVAE")), src)
    data = src.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    assert run_cli("convert", truncated, tmp_path / "out", *SMALL) == 2
    out = capsys.readouterr().out
    assert str(truncated) in out and "truncated" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, not a checkpoint\n", "not a torch checkpoint"),
        (b"\x80\x04K\x01.", "bare pickle"),
    ],
)
def test_wrong_kind_of_file(tmp_path, content, message):
    src = tmp_path / "model.pt"
    src.write_bytes(content)
    with pytest.raises(TorchFileError, match=message):
        conversion.read_source(src)


def test_other_zip_and_trainer_states_as_source(pickled_module, tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(TorchFileError, match="no data.pkl"):
        conversion.read_source(other)
    folder, _ = pickled_module
    with pytest.raises(TorchFileError, match="holds no model weights"):
        conversion.read_source(folder / "trainer_states.pt")


# -- round trips, overwrite protection, atomicity ------------------------------------------


def test_round_trips_are_bit_exact(tmp_path, capsys):
    original = {k: v.numpy() for k, v in random_state_dict(seed_table("MusicLSTMVAE"), 1).items()}
    torch.save({k: torch.from_numpy(v) for k, v in original.items()}, tmp_path / "a.pt")

    # torch -> orbax -> torch (and safetensors)
    assert run_cli("convert", tmp_path / "a.pt", tmp_path / "orbax_a", *SMALL) == 0
    assert run_cli("convert", tmp_path / "orbax_a", tmp_path / "b.pt") == 0
    assert run_cli("convert", tmp_path / "orbax_a", tmp_path / "b.safetensors", "--no-verify") == 0
    back = torch.load(tmp_path / "b.pt", weights_only=True)
    assert_same_tensors({k: v.numpy() for k, v in back.items()}, original)
    assert (tmp_path / "b.pt.json").is_file()
    assert_same_tensors(load_file(str(tmp_path / "b.safetensors")), original)

    # orbax -> torch -> orbax, the config travelling in b.pt.json
    assert run_cli("convert", tmp_path / "b.pt", tmp_path / "orbax_b") == 0
    config_a, params_a = checkpoints.load_params(tmp_path / "orbax_a")
    config_b, params_b = checkpoints.load_params(tmp_path / "orbax_b")
    assert config_a["model"] == config_b["model"]
    flat_a = traverse_util.flatten_dict(checkpoints.to_numpy(params_a))
    flat_b = traverse_util.flatten_dict(checkpoints.to_numpy(params_b))
    assert_same_tensors(flat_a, flat_b)
    figures = [
        verification_figure(line)
        for line in capsys.readouterr().out.splitlines()
        if "teacher-forced" in line
    ]
    assert len(figures) == 3 and max(figures) < 1e-4
    # The torch file loads strictly into the torch reference.
    TorchMusicVAE(ModelConfig(**config_a["model"])).load_state_dict(back, strict=True)


def test_existing_destination_needs_force(tmp_path, capsys):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("MusicGRUVAE")), src)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    assert run_cli("convert", src, dst, *SMALL, "--no-verify") == 2
    assert "already exists; pass --force" in capsys.readouterr().out
    assert (dst / "keep.txt").read_text() == "precious"
    assert run_cli("convert", src, dst, *SMALL, "--no-verify", "--force") == 0
    assert not (dst / "keep.txt").exists()
    checkpoints.load_params(dst)
    # For torch outputs the config JSON beside counts too.
    (tmp_path / "x.pt.json").write_text("{}")
    assert run_cli("convert", dst, tmp_path / "x.pt", "--no-verify") == 2
    assert not (tmp_path / "x.pt").exists()
    no_leftovers(tmp_path)


def test_failed_verification_leaves_no_destination(tmp_path, monkeypatch, capsys):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("DanceabilityGRUVAE")), src)
    monkeypatch.setattr(conversion, "teacher_forced_difference", lambda *a: 0.5)
    assert run_cli("convert", src, tmp_path / "out", *SMALL) == 1
    assert "differ by up to 0.5" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert run_cli("convert", src, tmp_path / "out.pt", *SMALL) == 1
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "out.pt.json").exists()
    no_leftovers(tmp_path)


def test_failed_write_keeps_the_old_destination(tmp_path, monkeypatch):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("MusicGRUVAE")), src)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")

    def half_write(directory, *args, **kwargs):
        Path(directory, "checkpoints").mkdir(parents=True)
        Path(directory, "checkpoints", "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_params_checkpoint", half_write)
    with pytest.raises(OSError, match="disk full"):
        conversion.convert(src, dst, sets=SMALL_SETS, force=True)
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    no_leftovers(tmp_path)


def test_command_choices_match_the_library():
    assert convert_command.SOURCE_FORMATS == conversion.SOURCE_FORMATS
    assert convert_command.TARGET_FORMATS == conversion.TARGET_FORMATS


def test_unknown_set_key_is_refused(tmp_path):
    src = tmp_path / "model.pt"
    torch.save(random_state_dict(seed_table("MusicGRUVAE")), src)
    with pytest.raises(Exception, match="model.num_barz"):
        conversion.convert(src, tmp_path / "out", sets=["model.num_barz=2"], verify=False)
    with pytest.raises(ConversionError, match="no such file"):
        conversion.convert(tmp_path / "missing.pt", tmp_path / "out")


def test_torch_reference_training_checkpoint_uses_its_config(tmp_path, capsys):
    cfg = ModelConfig(
        cell="gru",
        encoder_hidden=HE,
        decoder_hidden=HD,
        latent_size=L,
        input_depth=D,
        num_bars=3,
        steps_per_bar=2,
        conditioning="latent",
        latent_condition_sigma=0.25,
        wiring="magenta",
    )
    torch.manual_seed(0)
    model = TorchMusicVAE(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    src = tmp_path / "train.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "config": dataclasses.asdict(cfg),
            "optimizer": optimizer.state_dict(),
            "step": 10,
        },
        src,
    )
    assert run_cli("convert", src, tmp_path / "out", "--no-verify") == 0
    assert "training_checkpoint" in capsys.readouterr().out
    config, params = checkpoints.load_params(tmp_path / "out")
    assert ModelConfig(**config["model"]) == cfg  # no inference, nothing ambiguous
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    assert_same_tensors(flax_to_torch(checkpoints.to_numpy(params), cfg), expected)
