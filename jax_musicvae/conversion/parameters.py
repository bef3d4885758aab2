"""Bit-exact conversion between torch-reference state dicts and Flax parameters.

Both sides store the same numbers: RNN weights are fused in torch's gate order and
Flax keeps them transposed (and a bidirectional layer's two directions stacked),
linear kernels are [in, out] in Flax and [out, in] in torch. So a conversion is a
renaming plus transposes and stacking, exact in both directions.
State dicts here are plain `{key: numpy array}` mappings so this module needs no
torch; `torch_reference` turns tensors into numpy and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from jax_musicvae.config import ModelConfig
from jax_musicvae.models import MusicVAE

RNN_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
TRANSPOSED = {"w_ih", "w_hh", "kernel"}


class ConversionError(ValueError):
    """A state dict or parameter tree does not match the configuration."""


def param_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat Flax parameter paths -> shapes, without allocating the weights."""
    model = MusicVAE(config)
    tokens = jax.ShapeDtypeStruct((1, config.sequence_length), np.int32)
    condition = jax.ShapeDtypeStruct((1,), np.float32) if config.uses_condition else None
    variables = jax.eval_shape(lambda t, c: model.init(jax.random.key(0), t, c), tokens, condition)
    flat = traverse_util.flatten_dict(variables["params"])
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def torch_entries(path: tuple[str, ...], config: ModelConfig) -> dict[str, int | None]:
    """The torch-reference state-dict keys of a Flax parameter path, each with the index
    of its slice on the Flax side: the encoder's bidirectional layers keep (forward,
    backward) on a leading axis, which torch stores as `..._l{k}` and `..._l{k}_reverse`."""
    *modules, leaf = path
    if leaf in RNN_NAMES:
        owner, layer = tuple(modules[:-1]), modules[-1]
        prefix = {
            ("encoder", "rnn"): f"encoder.bi{config.cell}",
            ("decoder", "conductor"): "decoder.conductor",
            ("decoder", "core"): f"decoder.{config.cell}",
        }[owner]
        key = f"{prefix}.{RNN_NAMES[leaf]}_{layer}"
        if owner == ("encoder", "rnn"):
            return {key: 0, f"{key}_reverse": 1}
        return {key: None}
    name = "weight" if leaf == "kernel" else leaf
    heads = (("encoder", "mu"), ("encoder", "sigma"))
    if tuple(modules) in heads or modules[0] in ("adversary", "rhythm"):
        return {f"{'.'.join(modules)}.{name}": None}
    return {f"{'.'.join(modules)}.0.{name}": None}


def _swap_kernel(leaf: str, value: np.ndarray) -> np.ndarray:
    """torch and Flax store RNN and linear kernels transposed relative to each other."""
    return np.swapaxes(value, -1, -2) if leaf in TRANSPOSED else value


def torch_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Expected torch state-dict keys and shapes for a configuration."""
    shapes = {}
    for path, shape in param_shapes(config).items():
        for key, index in torch_entries(path, config).items():
            one = shape if index is None else shape[1:]
            shapes[key] = one[::-1] if path[-1] in TRANSPOSED else one
    return shapes


def _check_state_dict(state_dict: Mapping[str, Any], config: ModelConfig) -> None:
    expected = torch_shapes(config)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"state dict does not match the configuration: missing {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{'...' if len(unexpected) > 6 else ''}"
        )
    for key, shape in expected.items():
        got = tuple(np.shape(state_dict[key]))
        if got != shape:
            raise ConversionError(f"{key} has shape {got}, the configuration needs {shape}")


def torch_to_flax(state_dict: Mapping[str, Any], config: ModelConfig) -> dict[str, Any]:
    """Flax `params` from a torch-reference (or magenta-torch) state dict of arrays."""
    _check_state_dict(state_dict, config)
    flat = {}
    for path in param_shapes(config):
        # Always a copy: torch tensors' numpy views would alias parameters updated in place.
        parts = [
            _swap_kernel(path[-1], np.array(state_dict[key], dtype=np.float32, copy=True))
            for key in torch_entries(path, config)
        ]
        value = parts[0] if len(parts) == 1 else np.stack(parts)
        flat[path] = np.ascontiguousarray(value)
    return traverse_util.unflatten_dict(flat)


def flax_to_torch(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """A torch-reference state dict (numpy arrays) from Flax `params`."""
    flat = traverse_util.flatten_dict(dict(params))
    expected = param_shapes(config)
    if set(flat) != set(expected):
        missing = sorted("/".join(p) for p in set(expected) - set(flat))
        unexpected = sorted("/".join(p) for p in set(flat) - set(expected))
        raise ConversionError(
            f"parameters do not match the configuration: missing {missing[:6]}, "
            f"unexpected {unexpected[:6]}"
        )
    state_dict = {}
    for path, value in flat.items():
        array = np.asarray(value)
        if array.shape != expected[path]:
            raise ConversionError(
                f"{'/'.join(path)} has shape {array.shape}, the configuration needs "
                f"{expected[path]}"
            )
        for key, index in torch_entries(path, config).items():
            part = array if index is None else array[index]
            state_dict[key] = np.array(_swap_kernel(path[-1], part), copy=True, order="C")
    return state_dict
