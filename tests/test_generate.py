"""Generation API and CLI on tiny random checkpoints: shapes, seeds, slerp, windows, edits, errors.

Models use batch_size=1 (one compiled shape per function) unless a test is about
chunking; all checkpoints share one architecture per conditioning, so the jitted
functions are compiled once per variant for the whole module.
"""

from __future__ import annotations

import dataclasses
import json
import wave
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from helpers import (
    make_checkpoint,
    random_params,
    run_cli,
    scale_notes,
    tiny_model_experiment,
    write_midi_file,
)

from jax_musicvae.attributes import ATTRIBUTE_FILE, AttributeVector
from jax_musicvae.checkpoints import save_params_checkpoint
from jax_musicvae.data import midi_io
from jax_musicvae.data.representations import Melody90
from jax_musicvae.data.source import WindowSource
from jax_musicvae.generate import (
    CheckpointMismatchError,
    GenerationError,
    TrainedModel,
    slerp,
)

VARIANTS = ("none", "encoder", "latent", "decoder")
MEL = Melody90()
T = 32


def melody(seed: int, steps: int = T) -> np.ndarray:
    """A canonical melody90 token sequence with a note every one to four steps."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros(steps, np.int32)
    pos = np.cumsum(rng.integers(1, 5, steps))
    pos = pos[pos < steps]
    tokens[pos] = rng.integers(50, 70, len(pos))
    tokens[0] = 60
    return tokens


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generate")
    for variant in VARIANTS:
        make_checkpoint(root / variant, variant)
    return root


@pytest.fixture(scope="module")
def models(workdir) -> dict[str, TrainedModel]:
    return {v: TrainedModel.load(workdir / v, batch_size=1) for v in VARIANTS}


# ---------------------------------------------------------------- API


@pytest.mark.parametrize("variant", VARIANTS)
def test_sample_shapes_and_seeds(models, variant):
    model = models[variant]
    a = model.sample(3, temperature=1.0, seed=1)
    assert a.shape == (3, T) and a.min() >= 0 and a.max() < 90
    np.testing.assert_array_equal(model.sample(3, temperature=1.0, seed=1), a)
    assert not np.array_equal(model.sample(3, temperature=1.0, seed=2), a)
    greedy = model.sample(2, temperature=0.0, seed=1)
    np.testing.assert_array_equal(model.sample(2, temperature=0.0, seed=1), greedy)


@pytest.mark.parametrize("variant", VARIANTS)
def test_refinement_decodes_the_mu_of_the_first_decoding(models, variant):
    model = models[variant]
    first = model.sample(3, temperature=1.0, seed=1, refine=0)
    z, condition = model.prior(3, seed=1)
    np.testing.assert_array_equal(first, model._decode(z, condition, 1.0, 1))
    mu = model.encode(list(first), danceability=0.5).mu  # c as the prior set it
    expected = model.decode(mu, temperature=1.0, seed=2)
    np.testing.assert_array_equal(model.sample(3, temperature=1.0, seed=1), expected)
    with pytest.raises(GenerationError, match="refine=-1 must be >= 0"):
        model.sample(3, refine=-1)
    with pytest.raises(GenerationError, match="refine=-1 must be >= 0"):
        models["decoder"].edit(melody(0), 0.7, refine=-1)


def test_chunking_does_not_change_results(workdir, models):
    model = TrainedModel.load(workdir / "none", batch_size=4)
    many = model.sample(5, temperature=1.0, seed=3)  # chunks of 4 and 1 (padded to 1)
    np.testing.assert_array_equal(many, models["none"].sample(5, temperature=1.0, seed=3))
    np.testing.assert_array_equal(many[:3], model.sample(3, temperature=1.0, seed=3))


def test_encode_shapes_seeds_and_condition(models):
    a, b = melody(0), melody(1, steps=3 * T - 8)  # b: three windows, the last padded
    enc = models["latent"].encode([a, b], danceability=[0.2, 0.7], seed=5)
    assert enc.z.shape == enc.mu.shape == enc.sigma.shape == (4, 5)  # z_size = 4 + c
    np.testing.assert_array_equal(enc.melody, [0, 1, 1, 1])
    np.testing.assert_allclose(enc.mu[:, -1], [0.2, 0.7, 0.7, 0.7], atol=1e-6)
    np.testing.assert_allclose(enc.z[:, -1], enc.mu[:, -1])  # latent_condition_sigma = 0
    assert (enc.sigma[:, :-1] > 0).all() and not np.allclose(enc.z, enc.mu)
    again = models["latent"].encode([a, b], danceability=[0.2, 0.7], seed=5)
    np.testing.assert_array_equal(again.z, enc.z)
    assert enc.lengths == (T, 3 * T - 8) and enc.windows.shape == (4, T)
    np.testing.assert_array_equal(enc.windows[1:].reshape(-1)[: len(b)], b)
    assert (enc.windows[-1, -8:] == 0).all()  # padded with melody90's no-event token


def test_slerp_ends_and_norm():
    rng = np.random.default_rng(0)
    p0, p1 = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    path = slerp(p0, p1, np.linspace(0, 1, 5))
    assert path.shape == (5, 3, 6)
    np.testing.assert_allclose(path[0], p0, rtol=1e-6)
    np.testing.assert_allclose(path[-1], p1, rtol=1e-6)
    unit0, unit1 = p0 / np.linalg.norm(p0, axis=1, keepdims=True), p1
    unit1 = unit1 / np.linalg.norm(p1, axis=1, keepdims=True)
    middle = slerp(unit0, unit1, np.array([0.5]))[0]
    np.testing.assert_allclose(np.linalg.norm(middle, axis=1), 1.0, rtol=1e-5)  # on the sphere
    np.testing.assert_allclose(slerp(p0, p0, np.array([0.3]))[0], p0, rtol=1e-6)  # parallel


@pytest.mark.parametrize("variant", ["latent", "decoder"])
def test_interpolate_ends_are_the_encoded_mus(models, variant):
    model = models[variant]
    a, b = melody(2, steps=2 * T), melody(3, steps=2 * T + 16)
    codes, condition, length = model.interpolation_codes(a, b, 4)
    enc = model.encode([a, b])
    assert codes.shape == (4, 2, model.config.z_size) and length == 2 * T
    np.testing.assert_allclose(codes[0], enc.mu[enc.melody == 0], rtol=1e-6)
    np.testing.assert_allclose(codes[-1], enc.mu[enc.melody == 1][:2], rtol=1e-6)
    np.testing.assert_allclose(condition[:, 0], np.linspace(*enc.danceability[[0, 2]], 4))
    tokens = model.interpolate(a, b, steps=4)
    assert tokens.shape == (4, 2 * T)
    np.testing.assert_array_equal(tokens[0], model.reconstruct(a))
    with pytest.raises(GenerationError, match="steps"):
        model.interpolate(a, b, steps=1)


def test_long_melody_is_split_and_joined(models):
    model = models["none"]
    long = np.concatenate([melody(4), melody(5), melody(6)[:20]])  # 2 windows + 20 steps
    out = model.reconstruct(long)
    assert out.shape == (len(long),)
    np.testing.assert_array_equal(out[:T], model.reconstruct(long[:T]))
    np.testing.assert_array_equal(out[T : 2 * T], model.reconstruct(long[T : 2 * T]))
    several = model.reconstruct([long, melody(7)])
    assert [len(x) for x in several] == [len(long), T]
    np.testing.assert_array_equal(several[0], out)


def test_inputs_path_pretty_midi_and_tokens_agree(tmp_path, models):
    model = models["none"]
    notes = [(480 * 4 + i * 240, 240, 60 + i % 5) for i in range(12)]  # starts in bar 2
    path = write_midi_file(tmp_path / "in.mid", [(0, False, notes)])
    from_path = model.melody(path)
    assert len(from_path.tokens) == 2 * 16  # leading silent bar trimmed, 1.5 bars -> 2
    assert from_path.tokens[0] == 60 - 21 + 2 and 0 <= from_path.danceability <= 1
    from_pm = model.melody(pretty_midi.PrettyMIDI(str(path)))
    np.testing.assert_array_equal(from_pm.tokens, from_path.tokens)
    np.testing.assert_array_equal(model.reconstruct(path), model.reconstruct(from_path.tokens))


def test_bad_inputs_and_requests(tmp_path, models):
    drums = write_midi_file(tmp_path / "drums.mid", [(0, True, scale_notes(2))])
    high = write_midi_file(tmp_path / "high.mid", [(0, False, [(0, 480, 120)])])
    with pytest.raises(midi_io.MidiError, match="only drum notes"):
        models["none"].reconstruct(drums)
    with pytest.raises(GenerationError, match="no usable melody"):
        models["none"].reconstruct(high)
    with pytest.raises(GenerationError, match=r"tokens must lie in \[0, 90\)"):
        models["none"].reconstruct(np.full(T, 95))
    with pytest.raises(GenerationError, match="attribute-vector"):
        models["none"].sample(2, danceability=0.8)
    with pytest.raises(GenerationError, match="attribute-vector"):
        models["none"].edit(melody(0), danceability=0.8)
    with pytest.raises(GenerationError, match="only when encoding; use edit"):
        models["encoder"].sample(2, danceability=0.8)
    with pytest.raises(GenerationError, match=r"danceability must lie in \[0, 1\]"):
        models["decoder"].sample(2, danceability=1.5)
    with pytest.raises(GenerationError, match="temperature"):
        models["decoder"].sample(2, temperature=-1.0)


def test_edit_decoder_decodes_mu_with_requested_c(models):
    model, source = models["decoder"], melody(8, steps=2 * T)
    enc, z, condition = model.edit_codes(source, danceability=0.9)
    np.testing.assert_array_equal(z, enc.mu)
    np.testing.assert_allclose(condition, [0.9, 0.9])
    edited = model.edit(source, danceability=0.9, refine=0, keep_source=False)
    np.testing.assert_array_equal(edited, model.decode(enc.mu, 0.9, temperature=0).reshape(-1))
    assert not np.array_equal(
        edited, model.edit(source, danceability=0.1, refine=0, keep_source=False)
    )


def test_edit_latent_sets_the_condition_dimension(models):
    model, source = models["latent"], melody(9)
    enc, z, condition = model.edit_codes(source, danceability=0.9)
    assert condition is None
    np.testing.assert_allclose(z[:, -1], 0.9)
    np.testing.assert_array_equal(z[:, :-1], enc.mu[:, :-1])
    half = model.edit_codes(source, danceability=0.9, strength=0.5)[1]
    np.testing.assert_allclose(half[:, -1], enc.danceability + 0.5 * (0.9 - enc.danceability))
    np.testing.assert_array_equal(
        model.edit(source, 0.9, refine=0, keep_source=False), model.decode(z, temperature=0)[0]
    )


def test_edit_encoder_encodes_again_with_c(models):
    model, source = models["encoder"], melody(10)
    _, z, condition = model.edit_codes(source, danceability=0.9)
    assert condition is None
    np.testing.assert_allclose(z, model.encode(source, danceability=0.9).mu, rtol=1e-6)
    assert not np.allclose(z, model.encode(source, danceability=0.1).mu)


def test_edit_none_adds_the_attribute_vector(workdir):
    model = TrainedModel.load(workdir / "none", batch_size=1)
    vector = AttributeVector(
        np.array([1.0, -2.0, 0.5, 0.0], np.float32), 0.8, 0.4, 3, 3, 0.25, "ds", "train"
    )
    model.set_attribute_vector(vector)
    source = melody(11)
    enc, z, _ = model.edit_codes(source, danceability=0.9, strength=0.5)
    target = enc.danceability + 0.5 * (0.9 - enc.danceability)
    expected = enc.mu + ((target - enc.danceability) / 0.4)[:, None] * vector.vector
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    prior, _ = model.prior(2, danceability=0.9, seed=0)
    plain, _ = model.prior(2, seed=0)
    np.testing.assert_allclose(
        prior - plain, np.tile((0.9 - 0.6) / 0.4 * vector.vector, (2, 1)), rtol=1e-5, atol=1e-6
    )
    short = dataclasses.replace(vector, vector=np.zeros(3, np.float32))
    with pytest.raises(CheckpointMismatchError, match="3 dimensions"):
        model.set_attribute_vector(short)


def test_mismatched_checkpoint_is_named(tmp_path):
    wrong = tiny_model_experiment("none")
    params = random_params(tiny_model_experiment("none", encoder_hidden=6).model)
    save_params_checkpoint(tmp_path / "bad", params, wrong.to_dict())
    with pytest.raises(CheckpointMismatchError, match="encoder.*shape"):
        TrainedModel.load(tmp_path / "bad")
    assert run_cli(*["sample", "--checkpoint", tmp_path / "bad", "--out", tmp_path / "o"]) == 2
    odd = tiny_model_experiment("none", input_depth=70)
    save_params_checkpoint(tmp_path / "odd", random_params(odd.model), odd.to_dict())
    with pytest.raises(CheckpointMismatchError, match="input_depth=70"):
        TrainedModel.load(tmp_path / "odd")


# ---------------------------------------------------------------- CLI


def read_back(path: Path) -> np.ndarray:
    return midi_io.read_tokens(path, MEL, T)


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sample_writes_midi_png_wav(workdir, models, tmp_path):
    out = tmp_path / "s"
    argv = ["sample", "--checkpoint", workdir / "decoder", "--out", out, "-n", "2", "--seed", "4"]
    argv += ["--batch-size", "1"]  # the shape the module's models compiled
    assert run_cli(*[*argv, "--danceability", "0.8", "--wav"]) == 0
    expected = models["decoder"].sample(2, 0.8, temperature=1.0, seed=4)
    for i in range(2):
        stem = out / f"sample_{i:03d}"
        np.testing.assert_array_equal(
            read_back(stem.with_suffix(".mid")), MEL.canonical(expected[i : i + 1])[0]
        )
        assert is_png(stem.with_suffix(".png"))
        with wave.open(str(stem.with_suffix(".wav"))) as audio:
            assert audio.getframerate() == 22050 and audio.getnframes() > 22050  # 2 bars = 4 s
    assert run_cli(*[*argv, "--danceability", "0.8", "--checkpoint", workdir / "encoder"]) == 2


def test_cli_interpolate_reconstruct_edit(workdir, models, tmp_path):
    a = write_midi_file(tmp_path / "a.mid", [(0, False, scale_notes(2, base=55))])
    b = write_midi_file(tmp_path / "b.mid", [(0, False, [(i * 480, 480, 70) for i in range(8)])])
    ckpt, out = workdir / "decoder", tmp_path / "out"
    common = ["--checkpoint", ckpt, "--out", out, "--batch-size", "1"]
    assert run_cli(*["interpolate", a, b, "--steps", "3", *common]) == 0
    mids = sorted(out.glob("interpolate_*.mid"))
    assert len(mids) == 3 and is_png(out / "interpolate.png")
    expected = models["decoder"].interpolate(a, b, 3)
    for mid, tokens in zip(mids, expected, strict=True):
        np.testing.assert_array_equal(read_back(mid), MEL.canonical(tokens[None])[0])
    assert run_cli(*["reconstruct", a, *common]) == 0
    np.testing.assert_array_equal(
        read_back(out / "a_reconstruction.mid"),
        MEL.canonical(models["decoder"].reconstruct(a)[None])[0],
    )
    assert is_png(out / "a_reconstruction.png")
    assert run_cli(*["edit", a, "--danceability", "0.9", *common]) == 0
    np.testing.assert_array_equal(
        read_back(out / "a_danceability_0.90.mid"),
        MEL.canonical(models["decoder"].edit(a, 0.9)[None])[0],
    )
    assert is_png(out / "a_danceability_0.90.png")


def test_cli_errors_name_the_problem(workdir, tmp_path, caplog):
    drums = write_midi_file(tmp_path / "drums.mid", [(0, True, scale_notes(2))])
    out = tmp_path / "out"
    assert run_cli(*["reconstruct", drums, "--checkpoint", workdir / "none", "--out", out]) == 2
    assert "drums.mid: only drum notes" in caplog.text
    tune = write_midi_file(tmp_path / "tune.mid", [(0, False, scale_notes(2))])
    edit = ["edit", tune, "--danceability", "0.9", "--out", out]
    assert run_cli(*[*edit, "--checkpoint", workdir / "none"]) == 2
    assert "musicvae attribute-vector" in caplog.text
    assert run_cli(*[*edit, "--checkpoint", tmp_path / "missing"]) == 2
    assert "no such checkpoint" in caplog.text
    assert not out.exists()


def test_cli_attribute_vector_then_edit_none(tmp_path, generation_dataset, caplog):
    ckpt = make_checkpoint(tmp_path / "none", "none")
    argv = [
        "attribute-vector",
        "--checkpoint",
        ckpt,
        "--data",
        generation_dataset,
        "--batch-size",
        "1",
    ]
    assert run_cli(*argv) == 0
    stored = json.loads((ckpt / "checkpoints" / "0" / ATTRIBUTE_FILE).read_text())
    assert len(stored["vector"]) == 4 and np.isfinite(stored["vector"]).all()
    assert stored["high_danceability"] > stored["low_danceability"]
    assert stored["high_count"] == stored["low_count"] >= 1 and stored["split"] == "train"
    model = TrainedModel.load(ckpt, batch_size=1)
    np.testing.assert_allclose(model.attribute_vector.vector, stored["vector"], rtol=1e-6)
    train = WindowSource(generation_dataset, "train")
    order = np.argsort(train.condition, kind="stable")
    quarter = len(order) // 4
    mu = model.encode(np.asarray(train.tokens, np.int32)).mu
    expected = mu[order[-quarter:]].mean(0) - mu[order[:quarter]].mean(0)
    np.testing.assert_allclose(stored["vector"], expected, rtol=1e-5, atol=1e-6)
    tune = write_midi_file(tmp_path / "tune.mid", [(0, False, scale_notes(2))])
    out = tmp_path / "out"
    assert (
        run_cli(*["edit", tune, "--danceability", "0.9", "--checkpoint", ckpt, "--out", out]) == 0
    )
    assert (out / "tune_danceability_0.90.mid").is_file()
    decoder = make_checkpoint(tmp_path / "dec", "decoder")
    assert (
        run_cli(*["attribute-vector", "--checkpoint", decoder, "--data", generation_dataset]) == 2
    )
    assert "attribute vectors are for models trained with conditioning 'none'" in caplog.text


def test_quickstart_samples_are_the_models_samples(workdir, models, tmp_path):
    """The README main job's samples: MIDI and PNG per sample, equal to TrainedModel.sample."""
    from jax_musicvae.commands.quickstart import write_samples

    written = write_samples(models["decoder"], tmp_path / "samples", 3, 1.0, seed=5)
    names = sorted(p.name for p in written)
    assert names == sorted(
        [f"sample_0{i}.{e}" for i in range(3) for e in ("mid", "png")] + ["samples.png"]
    )
    expected = models["decoder"].sample(3, temperature=1.0, seed=5)
    for i, tokens in enumerate(expected):
        reference = midi_io.write_midi(tokens, MEL, tmp_path / f"expected_{i}.mid")
        assert (tmp_path / "samples" / f"sample_0{i}.mid").read_bytes() == reference.read_bytes()
