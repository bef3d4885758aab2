"""Aimed danceability requests (`TrainedModel(aim=True)`): per code, the attribute value
whose rhythm-decoder note-ons have the requested rhythm estimate."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from helpers import random_params, tiny_model_experiment

from jax_musicvae.config import FIRST_NOTE_ON, LossConfig
from jax_musicvae.data.representations import REPRESENTATIONS
from jax_musicvae.data.rhythm import melody_danceability, onset_danceability
from jax_musicvae.generate import AIM_GRID, AIM_SLACK, GenerationError, TrainedModel
from jax_musicvae.models import MusicVAE

QUANTILES = tuple(float(q) for q in np.linspace(0.2, 0.9, 11))


def _model(aim: bool | None, rhythm_hidden: int = 16) -> TrainedModel:
    experiment = tiny_model_experiment("none", rhythm_hidden=rhythm_hidden, rhythm_code_size=2)
    experiment = dataclasses.replace(
        experiment, loss=LossConfig(attribute_loss="sign", attribute_quantiles=QUANTILES)
    )
    params = random_params(experiment.model, seed=5)
    if rhythm_hidden:  # wider weights, so the note-ons change along dimension 0
        params["rhythm"] = jax.tree.map(lambda w: 4.0 * w, params["rhythm"])
    return TrainedModel(experiment, params, aim=aim)


def _note_ons(model: TrainedModel, z: np.ndarray) -> np.ndarray:
    """The rhythm decoder's note-on flags [N, T] of codes z, computed here from the module."""
    module = MusicVAE(model.config)
    logits = module.apply({"params": model.params}, z, method=lambda m, z: m.rhythm(z))
    return np.asarray(logits) > 0


def _reached(model: TrainedModel, z: np.ndarray) -> np.ndarray:
    """Rhythm estimate [N, len(AIM_GRID)] of each code's note-ons at every grid value
    (scored as token melodies, independently of `onset_danceability`)."""
    rows = []
    for code in z:
        candidates = np.repeat(code[None], len(AIM_GRID), axis=0)
        candidates[:, 0] = AIM_GRID
        flags = _note_ons(model, candidates)
        tokens = np.where(flags, FIRST_NOTE_ON + 40, model.representation.no_event)
        rows.append([melody_danceability(t, model.representation) for t in tokens])
    return np.array(rows)


def _reached_at(model: TrainedModel, z: np.ndarray) -> np.ndarray:
    """Rhythm estimate [N] of each code's note-ons."""
    return onset_danceability(_note_ons(model, z))


def test_onset_danceability_is_the_estimate_of_the_same_note_ons() -> None:
    melody90 = REPRESENTATIONS["melody90"]
    flags = np.random.default_rng(0).random((40, 64)) < 0.35
    flags[20:] = flags[:20]  # repeated patterns are scored once, with the same value
    tokens = np.where(flags, FIRST_NOTE_ON + 10, melody90.no_event)
    expected = [melody_danceability(t, melody90) for t in tokens]
    np.testing.assert_allclose(onset_danceability(flags), expected, atol=1e-6)
    assert onset_danceability(np.zeros((1, 64)))[0] == 0.0


def test_aimed_values_reach_the_request_best_on_the_grid() -> None:
    plain, aimed = _model(aim=False), _model(aim=True)
    z = np.random.default_rng(1).normal(size=(12, aimed.config.z_size)).astype(np.float32)
    requests = np.linspace(0.1, 0.9, 12).astype(np.float32)
    unaimed, chosen = z.copy(), z.copy()
    plain._set_attribute(unaimed, requests)
    aimed._set_attribute(chosen, requests)
    np.testing.assert_array_equal(chosen[:, 1:], z[:, 1:])  # only the attribute dimension moves
    assert np.all(np.isin(chosen[:, 0], AIM_GRID.astype(np.float32)))
    reached = _reached(aimed, z)
    assert np.ptp(reached, axis=1).max() > 0.1  # the note-ons do change along dimension 0
    cost = np.abs(reached - requests[:, None]) + AIM_SLACK * np.abs(AIM_GRID[None] - unaimed[:, :1])
    picked = np.searchsorted(AIM_GRID, chosen[:, 0] - 1e-6)
    np.testing.assert_allclose(cost[np.arange(12), picked], cost.min(axis=1), atol=1e-6)
    # Aimed note-ons are nearer the requests than those at the unaimed values.
    at_unaimed = np.abs(_reached_at(aimed, unaimed) - requests)
    at_aimed = np.abs(reached[np.arange(12), picked] - requests)
    assert at_aimed.mean() < at_unaimed.mean()


def test_aimed_sampling_and_edits_are_deterministic() -> None:
    model = _model(aim=True)
    first = model.sample(6, danceability=0.8, temperature=0.0, seed=3)
    np.testing.assert_array_equal(first, model.sample(6, danceability=0.8, temperature=0.0, seed=3))
    melody = first[0]
    edited = model.edit(melody, danceability=0.2)
    assert edited.shape == melody.shape
    np.testing.assert_array_equal(edited, model.edit(melody, danceability=0.2))


def test_decoding_a_code_without_a_request_keeps_it() -> None:
    """The danceability map is fitted by decoding codes as they are: no aiming there."""
    plain, aimed = _model(aim=False), _model(aim=True)
    z = np.random.default_rng(2).normal(size=(6, aimed.config.z_size)).astype(np.float32)
    z[:, 0] = np.linspace(-3.0, 3.0, 6)
    np.testing.assert_array_equal(
        aimed.decode(z, temperature=0.0, refine=1), plain.decode(z, temperature=0.0, refine=1)
    )


def test_models_with_a_rhythm_decoder_aim_by_default() -> None:
    assert _model(aim=None).aim
    assert not _model(aim=None, rhythm_hidden=0).aim
    with pytest.raises(GenerationError, match="rhythm decoder"):
        _model(aim=True, rhythm_hidden=0)
