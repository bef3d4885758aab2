"""The playground's JSON API in-process: every route, every error path, and a load test.

The model is a tiny random one with an attribute dimension (so danceability
requests are honoured); results are compared with the `TrainedModel` calls the
CLI makes, so the page and the CLI are known to compute the same thing.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import symusic
from fastapi.testclient import TestClient
from helpers import (
    make_checkpoint,
    make_controllable_checkpoint,
    random_params,
    run_cli,
    scale_notes,
    tiny_model_experiment,
    write_midi_file,
)
from original_checkpoints import ORIGINAL_CLASSES, original_table

from jax_musicvae.data.midi_io import read_tokens
from jax_musicvae.data.rhythm import melody_danceability
from jax_musicvae.data.source import WindowSource
from jax_musicvae.generate import TrainedModel
from jax_musicvae.playground.app import create_app
from jax_musicvae.playground.load import BackgroundServer, load_test, post
from jax_musicvae.playground.service import (
    MAX_UPLOAD_BYTES,
    MAX_WINDOWS,
    Playground,
    PlaygroundError,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TrainedModel:
    return TrainedModel.load(make_controllable_checkpoint(tmp_path_factory.mktemp("play") / "run"))


@pytest.fixture(scope="module")
def playground(model, generation_dataset) -> Playground:
    play = Playground(model, data=generation_dataset, split="test")
    play.warm_up()
    return play


@pytest.fixture(scope="module")
def client(playground) -> TestClient:
    return TestClient(create_app(playground))


@pytest.fixture(scope="module")
def melody(model) -> list[int]:
    return model.sample(1, temperature=1.0, seed=5)[0].tolist()


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    return message


# ----------------------------------------------------------------- the routes


def test_info_describes_the_model_and_limits(client, model, generation_dataset):
    info = ok(client.get("/api/info"))
    windows = len(WindowSource(generation_dataset, "test"))
    assert info["controllable"] is True
    assert info["model"]["latent_size"] == model.config.z_size
    assert info["window_steps"] == model.config.sequence_length == 32
    assert info["held_out"] == {"split": "test", "windows": windows}
    assert info["limits"]["upload_bytes"] == 2 * 1024 * 1024
    assert info["checkpoint"] == str(model.checkpoint_dir)


def test_the_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/playground.js", "/static/playground.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    # No external URL anywhere: the page works without internet access.
    for text in (page.text, client.get("/static/playground.js").text):
        assert "http://" not in text and "https://" not in text
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN
    assert "/api/edit" in ok(client.get("/openapi.json"))["paths"]


def test_sample_is_the_models_sample_with_seed_and_command(client, model):
    body = {"count": 3, "temperature": 1.0, "seed": 7, "danceability": 0.8}
    result = ok(client.post("/api/sample", json=body))
    tokens = np.array([m["tokens"] for m in result["melodies"]])
    np.testing.assert_array_equal(tokens, model.sample(3, 0.8, 1.0, 7))
    assert result["seed"] == 7
    assert "musicvae sample --checkpoint" in result["command"]
    assert "--num 3 --temperature 1 --seed 7 --danceability 0.8" in result["command"]
    first = result["melodies"][0]
    notes = model.representation.decode(tokens[0])
    assert first["notes"] == np.stack([notes.onsets, notes.ends, notes.pitches], 1).tolist()
    assert first["danceability"] == pytest.approx(
        melody_danceability(tokens[0], model.representation), abs=1e-4
    )
    again = ok(client.post("/api/sample", json=body))
    assert again["melodies"] == result["melodies"]
    other = ok(client.post("/api/sample", json={**body, "seed": 8}))
    assert other["melodies"] != result["melodies"]


def test_encode_then_decode_is_the_models(client, model, melody):
    enc = ok(client.post("/api/encode", json={"tokens": melody, "seed": 2}))
    expected = model.encode(np.array(melody), seed=2)
    assert enc["windows"] == 1
    np.testing.assert_allclose(enc["mu"], expected.mu, rtol=1e-6)
    np.testing.assert_allclose(enc["z"], expected.z, rtol=1e-6)
    dec = ok(client.post("/api/decode", json={"z": enc["mu"], "seed": 2}))
    np.testing.assert_array_equal(
        dec["melodies"][0]["tokens"], model.decode(expected.mu, temperature=0.0, seed=2)[0]
    )


def test_reconstruct_reports_its_accuracy(client, model, melody):
    result = ok(client.post("/api/reconstruct", json={"tokens": melody}))
    expected = model.reconstruct(np.array(melody))
    assert result["melody"]["tokens"] == expected.tolist()
    assert result["accuracy"] == pytest.approx(np.mean(expected == np.array(melody)), abs=1e-4)


def test_edit_is_the_models_edit(client, model, melody):
    body = {"tokens": melody, "danceability": 0.85, "strength": 0.5, "name": "my tune"}
    result = ok(client.post("/api/edit", json=body))
    expected = model.edit(np.array(melody), 0.85, 0.5)
    assert result["edited"]["tokens"] == expected.tolist()
    assert result["source"]["tokens"] == melody
    assert result["kept"] == pytest.approx(np.mean(expected == np.array(melody)), abs=1e-4)
    assert result["command"].startswith("musicvae edit my_tune.mid --checkpoint ")
    assert "--danceability 0.85 --strength 0.5" in result["command"]


def test_interpolate_is_the_models_interpolation(client, model, melody):
    end = model.sample(1, temperature=1.0, seed=6)[0]
    body = {"start": melody, "end": end.tolist(), "steps": 4}
    result = ok(client.post("/api/interpolate", json=body))
    expected = model.interpolate(np.array(melody), end, 4)
    assert [m["tokens"] for m in result["melodies"]] == expected.tolist()
    assert "--steps 4" in result["command"]


def test_analyse_measures_one_melody(client, model, melody):
    result = ok(client.post("/api/analyse", json={"tokens": melody}))
    tokens = np.array(melody)
    assert result["melody"]["danceability"] == pytest.approx(
        melody_danceability(tokens, model.representation), abs=1e-4
    )
    assert result["notes"] == len(model.representation.decode(tokens).onsets)
    assert set(result["features"]) >= {"density", "beat_coverage", "syncopation"}
    assert result["bars"] == 2


def test_held_out_windows_come_from_the_dataset(client, generation_dataset):
    source = WindowSource(generation_dataset, "test")
    result = ok(client.get("/api/held-out/3"))
    assert result["melody"]["tokens"] == source.tokens[3].tolist()
    assert result["index"] == 3 and result["windows"] == len(source)
    error(client.get(f"/api/held-out/{len(source)}"), 400, "out of range")
    error(client.get("/api/held-out/-1"), 400, "out of range")
    error(client.get("/api/held-out/x"), 422, "index")


def test_upload_reads_midi_with_the_projects_reader(client, model, tmp_path):
    path = write_midi_file(tmp_path / "tune.mid", [(0, False, scale_notes(3))])
    result = ok(client.post("/api/upload?name=tune.mid", content=path.read_bytes()))
    assert result["melody"]["tokens"] == model.melody(path).tokens.tolist()
    assert result["melody"]["name"] == "tune" and result["note"] is None


def test_upload_of_a_long_melody_is_cut_with_a_note(client, tmp_path):
    path = write_midi_file(tmp_path / "long.mid", [(0, False, scale_notes(40))])
    result = ok(client.post("/api/upload?name=long.mid", content=path.read_bytes()))
    assert result["melody"]["steps"] == MAX_WINDOWS * 32
    assert "kept the first 16" in result["note"]


def test_midi_download_parses_back_to_the_melody(client, model, melody, tmp_path):
    response = client.post("/api/midi", json={"tokens": melody, "name": "../../etc/passwd"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/midi"
    assert response.headers["content-disposition"] == 'attachment; filename="passwd.mid"'
    path = tmp_path / "down.mid"
    path.write_bytes(response.content)
    np.testing.assert_array_equal(read_tokens(path, model.representation, len(melody)), melody)
    error(client.post("/api/midi", json={"tokens": melody, "tempo": 1000}), 422, "tempo")


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 17}, "count"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 4}, "temperature"),
        ({"seed": -1}, "seed"),
        ({"danceability": 1.5}, "danceability"),
        ({"count": "many"}, "count"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_sample_parameters_out_of_range_are_422(client, body, field):
    error(client.post("/api/sample", json=body), 422, field)


def test_bad_melodies_are_refused_with_the_reason(client, melody):
    error(client.post("/api/edit", json={"tokens": [], "danceability": 0.5}), 422, "tokens")
    error(
        client.post("/api/edit", json={"tokens": [0, 5, 90], "danceability": 0.5}),
        400,
        "[0, 90)",
    )
    too_long = [0] * (MAX_WINDOWS * 32 + 1)
    error(client.post("/api/analyse", json={"tokens": too_long}), 400, "at most 256")
    error(client.post("/api/edit", json={"tokens": melody}), 422, "danceability")
    error(client.post("/api/interpolate", json={"start": melody, "end": [-1]}), 400, "end")
    error(
        client.post("/api/interpolate", json={"start": melody, "end": melody, "steps": 1}),
        422,
        "steps",
    )
    error(client.post("/api/decode", json={"z": [[0.0, 1.0]]}), 400, "codes of 4 numbers")
    error(
        client.post(
            "/api/edit", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "JSON",
    )


def test_bad_uploads_are_refused_with_the_reason(client, tmp_path):
    drums = write_midi_file(tmp_path / "drums.mid", [(0, True, scale_notes(2))])
    silent = symusic.Score(480)
    silent.tracks.append(symusic.Track("empty", 0, False))
    cases = [
        (b"", 400, "empty file"),
        (b"RIFF....WAVEfmt ", 400, "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00", 400, "corrupt"),
        (drums.read_bytes(), 400, "only drum notes"),
        (silent.dumps_midi(), 400, "no notes"),
        (b"MThd" + bytes(MAX_UPLOAD_BYTES), 413, "2 MB"),
    ]
    for data, status, words in cases:
        error(client.post("/api/upload?name=bad.mid", content=data), status, words)


def test_unknown_routes_and_path_traversal_are_404(client):
    error(client.get("/nothing"), 404, "GET /nothing")
    error(client.post("/api/train", json={}), 404, "POST /api/train")
    for path in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fservice.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static//etc/passwd",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "def " not in response.text and "root:" not in response.text


def test_requests_a_model_cannot_honour_are_400(tmp_path, generation_dataset):
    # conditioning 'none' without an attribute vector: no danceability requests.
    model = TrainedModel.load(make_checkpoint(tmp_path / "plain", "none"))
    client = TestClient(create_app(Playground(model)))
    error(client.post("/api/sample", json={"danceability": 0.5}), 400, "attribute vector")
    error(client.get("/api/held-out/0"), 400, "--data")
    info = ok(client.get("/api/info"))
    assert info["controllable"] is False and info["editable"] is False
    assert ok(client.post("/api/sample", json={"count": 1}))["melodies"]  # still serving


def test_a_dataset_that_does_not_fit_is_refused(model, train_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dataset"):
        Playground(model, data=tmp_path)
    with pytest.raises(PlaygroundError, match="split 'dev'"):
        Playground(model, data=train_dataset, split="dev")
    four_bars = tiny_model_experiment("none", num_bars=4)
    wide = TrainedModel(four_bars, random_params(four_bars.model))
    with pytest.raises(PlaygroundError, match="do not fit the model"):
        Playground(wide, data=train_dataset)


# ------------------------------------------------------------------ load


def test_concurrent_requests_are_served_correctly(playground, model, melody):
    """8 clients, mixed routes, on a real server: no errors, and each answer is the
    one a lone request gets (the lock keeps requests from mixing)."""
    with BackgroundServer(create_app(playground)) as server:
        report = load_test(server.url, requests=48, clients=8)
        assert report["all"]["requests"] == 48 and report["all"]["errors"] == 0
        assert sum(report[r]["requests"] for r in ("sample", "edit", "interpolate")) == 48
        assert 0 < report["all"]["p50_ms"] <= report["all"]["p95_ms"] <= report["all"]["max_ms"]

        def edit(value: float) -> list[int]:
            status, answer = post(
                f"{server.url}/api/edit", {"tokens": melody, "danceability": value}
            )
            assert status == 200
            return answer["edited"]["tokens"]

        values = [i / 15 for i in range(16)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(edit, values))
    alone = [model.edit(np.array(melody), v).tolist() for v in values]
    assert together == alone


def test_a_converted_original_checkpoint_is_served(tmp_path):
    """The original project's decoder-conditioned GRU (ZDanceVAE) after `musicvae convert`."""
    torch = pytest.importorskip("torch")
    table = original_table(*ORIGINAL_CLASSES["ZDanceVAE"], 6, 5, 4, 90)
    generator = torch.Generator().manual_seed(0)
    state = {k: 0.3 * torch.randn(shape, generator=generator) for k, shape in table.items()}
    torch.save(state, tmp_path / "model.pt")
    bars = ["--set", "model.num_bars=2"]
    assert (
        run_cli(
            "convert", tmp_path / "model.pt", tmp_path / "flax", "--from", "magenta-torch", *bars
        )
        == 0
    )
    client = TestClient(create_app(Playground(TrainedModel.load(tmp_path / "flax"))))
    info = ok(client.get("/api/info"))
    assert info["model"]["conditioning"] == "decoder" and info["controllable"]
    assert info["editable"]
    sampled = ok(client.post("/api/sample", json={"count": 2, "danceability": 0.9}))
    melody = sampled["melodies"][0]["tokens"]
    assert len(melody) == 32
    edited = ok(client.post("/api/edit", json={"tokens": melody, "danceability": 0.1}))
    assert edited["edited"]["steps"] == 32


def test_an_encoder_conditioned_model_edits_but_does_not_sample_a_danceability(tmp_path):
    model = TrainedModel.load(make_checkpoint(tmp_path / "enc", "encoder"))
    client = TestClient(create_app(Playground(model)))
    info = ok(client.get("/api/info"))
    assert (info["controllable"], info["editable"]) == (False, True)
    error(client.post("/api/sample", json={"danceability": 0.5}), 400, "encoding")
    melody = ok(client.post("/api/sample", json={"count": 1}))["melodies"][0]["tokens"]
    edited = ok(client.post("/api/edit", json={"tokens": melody, "danceability": 0.9}))
    assert edited["edited"]["tokens"] == model.edit(np.array(melody), 0.9).tolist()
