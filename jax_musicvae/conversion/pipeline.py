"""`musicvae convert`: checkpoints between magenta-torch, the torch reference and orbax.

The numbers move through `jax_musicvae.convert` (exact renames and transposes);
this module adds what a user's file needs around that: recognising the format,
inferring the architecture from names and shapes when no config travels with the
weights (refusing when two architectures fit), writing the destination atomically,
and checking the result by running both frameworks on a fixed probe batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_musicvae import checkpoints
from jax_musicvae.config import CONDITIONINGS, ModelConfig
from jax_musicvae.conversion.parameters import (
    ConversionError,
    flax_to_torch,
    torch_shapes,
    torch_to_flax,
)
from jax_musicvae.conversion.torch_files import (
    is_module_pickle,
    load_torch_checkpoint,
    open_archive,
)
from jax_musicvae.experiment import ExperimentConfig
from jax_musicvae.models import MusicVAE

logger = logging.getLogger(__name__)

SOURCE_FORMATS = ("auto", "magenta-torch", "torch", "orbax")
TARGET_FORMATS = ("orbax", "torch", "safetensors")
TOLERANCE = 1e-4
ORIGINAL_LATENT_CONDITION_SIGMA = 1.0  # MuDanceVAE fixed sigma of the appended c at 1.0
DEFAULT_BARS = 16  # the original's 16 bars of 16 steps; not recorded in any weights
DEFAULT_STEPS_PER_BAR = 16
PROBE_BATCH = 2
PROBE_SEED = 0
SAFETENSORS_CONFIG_KEY = "musicvae_config"


class VerificationError(ConversionError):
    """The two frameworks disagree on the converted weights beyond the tolerance."""


@dataclasses.dataclass
class Source:
    """A checkpoint as read: torch-side weights or Flax params, and what is known of it."""

    path: Path
    format: str  # magenta-torch | torch | orbax
    kind: str  # state_dict | module_pickle | training_checkpoint | safetensors | orbax
    state_dict: dict[str, np.ndarray] | None = None
    params: Any = None
    stored_config: dict[str, Any] | None = None
    class_name: str | None = None
    trainer_states: dict[str, Any] | None = None


@dataclasses.dataclass
class Report:
    """What a conversion did, for the command to print and tests to check."""

    source: Source
    destination: Path
    target: str
    config: ExperimentConfig
    notes: list[str]
    max_abs_difference: float | None = None
    config_path: Path | None = None


# -- formats -----------------------------------------------------------------------------


def config_path_for(weights: Path) -> Path:
    """The config JSON beside a torch or safetensors file: model.pt -> model.pt.json."""
    return weights.with_name(weights.name + ".json")


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _is_orbax(path: Path) -> bool:
    try:
        checkpoints.resolve(path)
    except checkpoints.CheckpointError:
        return False
    return True


def detect_format(path: Path) -> str:
    """magenta-torch (whole pickled module or its checkpoint folder), torch, or orbax."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if path.is_dir():
        if _is_orbax(path):
            return "orbax"
        if (path / "model.pt").is_file():
            return "magenta-torch"
        raise ConversionError(
            f"{path}: a directory that is neither an orbax checkpoint nor a magenta-torch "
            "checkpoint folder (with model.pt)"
        )
    if _is_safetensors(path):
        return "torch"
    return "magenta-torch" if is_module_pickle(open_archive(path)) else "torch"


def read_source(path: Path, fmt: str = "auto", trainer_states: Path | None = None) -> Source:
    """Read SRC in format `fmt` (auto-detected when 'auto') without executing anything in it."""
    path = Path(path)
    if fmt not in SOURCE_FORMATS:
        raise ConversionError(f"--from {fmt!r} is not one of {', '.join(SOURCE_FORMATS)}")
    detected = detect_format(path)
    fmt = detected if fmt == "auto" else fmt
    if fmt == "orbax":
        if detected != "orbax":
            raise ConversionError(f"{path}: not an orbax checkpoint (looks like {detected})")
        config, params = checkpoints.load_params(path)
        return Source(
            path, "orbax", "orbax", params=checkpoints.to_numpy(params), stored_config=config
        )
    if detected == "orbax":
        raise ConversionError(f"{path}: an orbax checkpoint, not a {fmt} file")
    if path.is_dir():
        path = path / "model.pt"
    if _is_safetensors(path):
        return _read_safetensors(path, fmt)
    checkpoint = load_torch_checkpoint(path, trainer_states)
    stored = checkpoint.config
    if stored is None and config_path_for(path).is_file():
        stored = _read_json(config_path_for(path))
    return Source(
        path,
        fmt,
        checkpoint.kind,
        state_dict=checkpoint.state_dict,
        stored_config=stored,
        class_name=checkpoint.class_name,
        trainer_states=checkpoint.trainer_states,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"{path}: unreadable config JSON: {err}") from err


def _read_safetensors(path: Path, fmt: str) -> Source:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        state_dict = load_file(str(path))
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ConversionError(f"{path}: unreadable safetensors file: {err}") from err
    stored = None
    if config_path_for(path).is_file():
        stored = _read_json(config_path_for(path))
    elif SAFETENSORS_CONFIG_KEY in metadata:
        stored = json.loads(metadata[SAFETENSORS_CONFIG_KEY])
    return Source(path, fmt, "safetensors", state_dict=state_dict, stored_config=stored)


# -- configuration -------------------------------------------------------------------------


def _experiment_from_stored(stored: dict[str, Any]) -> ExperimentConfig:
    """A stored experiment config, or a bare ModelConfig dict, as an ExperimentConfig."""
    if "model" in stored and isinstance(stored["model"], dict):
        return ExperimentConfig.from_dict(stored)
    return ExperimentConfig.from_dict({"model": stored})


def _set_model_fields(sets: Sequence[str]) -> set[str]:
    return {key.strip()[len("model.") :] for key, _, _ in (s.partition("=") for s in sets)} & {
        f.name for f in dataclasses.fields(ModelConfig)
    }


def _stack(sd: dict[str, np.ndarray], prefix: str, gates: int) -> tuple[int, int, int]:
    """(hidden, layers, input size) of a torch RNN stack's weights."""
    pattern = re.compile(rf"{re.escape(prefix)}\.weight_hh_l(\d+)")
    layers = sorted(int(m.group(1)) for key in sd if (m := pattern.fullmatch(key)))
    if not layers:
        raise ConversionError(f"no {prefix}.weight_hh_l0: not a MusicVAE state dict")
    if layers != list(range(len(layers))):
        raise ConversionError(f"{prefix} has layers {layers}: a layer is missing")
    shape = np.shape(sd[f"{prefix}.weight_hh_l0"])
    if len(shape) != 2 or shape[0] != gates * shape[1]:
        raise ConversionError(
            f"{prefix}.weight_hh_l0 has shape {shape}; a {'LSTM' if gates == 4 else 'GRU'} "
            f"needs [{gates}*H, H]"
        )
    input_shape = np.shape(sd.get(f"{prefix}.weight_ih_l0", ()))
    if len(input_shape) != 2:
        raise ConversionError(f"{prefix}.weight_ih_l0 is missing or not a matrix")
    return shape[1], len(layers), input_shape[1]


@functools.lru_cache(maxsize=32)
def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """torch_shapes, cached: inference checks every candidate config by tracing the model."""
    return torch_shapes(config)


def _mismatches(sd: dict[str, np.ndarray], config: ModelConfig) -> list[str]:
    expected = _expected_shapes(config)
    problems = [f"{k} missing" for k in sorted(set(expected) - set(sd))]
    problems += [f"{k} unexpected" for k in sorted(set(sd) - set(expected))]
    problems += [
        f"{k} is {tuple(np.shape(sd[k]))}, expected {shape}"
        for k, shape in expected.items()
        if k in sd and tuple(np.shape(sd[k])) != shape
    ]
    return problems


def infer_config(
    state_dict: dict[str, np.ndarray], fmt: str, sets: Sequence[str] = ()
) -> tuple[ExperimentConfig, list[str]]:
    """The architecture of a state dict, from its names and shapes, plus notes on guesses.

    Every conditioning variant is tried against the exact expected shapes; none
    fitting is a shape error, two fitting (possible with the magenta wiring:
    `latent` and `decoder` give the same shapes) is refused unless `--set
    model.conditioning` decides. Settings that no weight records (bars, steps per
    bar, the fixed sigma of `latent`) default as documented or must be given.
    """
    sd = state_dict
    user = _set_model_fields(sets)
    cells = {
        key.split(".")[1][2:] for key in sd if key.startswith(("encoder.bilstm.", "encoder.bigru."))
    }
    if len(cells) != 1:
        raise ConversionError(
            "cannot tell the cell type: expected encoder.bilstm.* or encoder.bigru.* keys, found "
            f"{sorted(cells) or 'neither'}"
        )
    cell = cells.pop()
    gates = 4 if cell == "lstm" else 3
    enc_hidden, enc_layers, depth = _stack(sd, f"encoder.bi{cell}", gates)
    dec_hidden, dec_layers, _ = _stack(sd, f"decoder.{cell}", gates)
    if "encoder.mu.weight" not in sd:
        raise ConversionError("no encoder.mu.weight: not a MusicVAE state dict")
    encoded = np.shape(sd["encoder.mu.weight"])[0]
    notes: list[str] = []
    if "z_embedding.0.weight" in sd or "decoder.conductor_embeddings.0.weight" in sd:
        wiring, bars = "original", DEFAULT_BARS
    elif "decoder.core_initial_state.0.weight" in sd:
        wiring = "magenta"
        bars = DEFAULT_BARS if "decoder.conductor_initial_state.0.weight" in sd else 1
    else:
        raise ConversionError(
            "cannot tell the wiring: neither z_embedding/conductor_embeddings (original) nor "
            "decoder.core_initial_state (magenta) is present"
        )
    if fmt == "magenta-torch" and wiring != "original":
        raise ConversionError(
            "--from magenta-torch, but the names are this project's magenta wiring"
        )
    heads = {}  # the adversary and the rhythm decoder, where the weights have them
    steps_per_bar, length_known = DEFAULT_STEPS_PER_BAR, False
    if "adversary.hidden.weight" in sd:
        heads["adversary_hidden"] = np.shape(sd["adversary.hidden.weight"])[0]
    if "rhythm.hidden.weight" in sd and "rhythm.output.weight" in sd:
        heads["rhythm_hidden"], heads["rhythm_code_size"] = np.shape(sd["rhythm.hidden.weight"])
        length = np.shape(sd["rhythm.output.weight"])[0]  # one logit per step
        if bars == 1:
            steps_per_bar, length_known = length, True
        elif length % DEFAULT_STEPS_PER_BAR == 0:
            bars, length_known = length // DEFAULT_STEPS_PER_BAR, True
    base = ModelConfig(
        cell=cell,
        encoder_hidden=enc_hidden,
        encoder_layers=enc_layers,
        decoder_hidden=dec_hidden,
        decoder_layers=dec_layers,
        input_depth=depth,
        latent_size=max(encoded, 2),
        num_bars=bars,
        steps_per_bar=steps_per_bar,
        wiring=wiring,
        latent_condition_sigma=ORIGINAL_LATENT_CONDITION_SIGMA if fmt == "magenta-torch" else 0.0,
        **heads,
    )
    fits: dict[ModelConfig, ExperimentConfig] = {}
    closest: tuple[int, list[str], ModelConfig] | None = None
    for conditioning in CONDITIONINGS:
        latent = encoded + 1 if conditioning == "decoder" else encoded
        candidate = dataclasses.replace(base, conditioning=conditioning, latent_size=latent)
        experiment = ExperimentConfig(model=candidate).override(list(sets))
        problems = _mismatches(sd, experiment.model)
        if not problems:
            fits[experiment.model] = experiment
        elif closest is None or len(problems) < closest[0]:
            closest = (len(problems), problems, experiment.model)
    if not fits:
        assert closest is not None
        raise ConversionError(
            f"the shapes fit no {wiring}-wiring {cell.upper()} MusicVAE; nearest is conditioning="
            f"{closest[2].conditioning!r}, which disagrees on: {'; '.join(closest[1][:6])}"
        )
    if len(fits) > 1:
        options = ", ".join(f"{c.conditioning} (latent_size={c.latent_size})" for c in fits)
        raise ConversionError(
            f"ambiguous: the names and shapes fit conditioning {options}; say which with "
            "--set model.conditioning=<name>"
        )
    experiment = next(iter(fits.values()))
    model = experiment.model
    if model.conditioning == "latent" and "latent_condition_sigma" not in user:
        if fmt != "magenta-torch":
            raise ConversionError(
                "conditioning 'latent': the noise scale of the appended danceability is not "
                "stored in the weights; the original magenta-torch MuDanceVAE fixed it at 1.0: "
                "pass --from magenta-torch for that, or --set model.latent_condition_sigma=<value>"
            )
        notes.append(
            f"latent_condition_sigma={ORIGINAL_LATENT_CONDITION_SIGMA} (the original MuDanceVAE's)"
        )
    if "adversary_hidden" in heads and "adversary_bound" not in user:
        notes.append(
            f"adversary_bound={model.adversary_bound}: the weights do not record it (change "
            "with --set model.adversary_bound=B; generation does not use the adversary)"
        )
    if length_known and not {"num_bars", "steps_per_bar"} & user:
        notes.append(
            f"num_bars={model.num_bars}, steps_per_bar={model.steps_per_bar}: from the rhythm "
            "decoder's one logit per step"
        )
    elif not {"num_bars", "steps_per_bar"} <= user:
        notes.append(
            f"num_bars={model.num_bars}, steps_per_bar={model.steps_per_bar}: the weights do not "
            "record them (defaults; change with --set model.num_bars=N model.steps_per_bar=S)"
        )
    notes.insert(
        0,
        f"inferred from names and shapes: cell={model.cell}, encoder {model.encoder_layers}x"
        f"{model.encoder_hidden}, decoder {model.decoder_layers}x{model.decoder_hidden}, "
        f"latent_size={model.latent_size}, input_depth={model.input_depth}, "
        f"conditioning={model.conditioning}, wiring={model.wiring}",
    )
    return experiment, notes


def source_config(source: Source, sets: Sequence[str] = ()) -> tuple[ExperimentConfig, list[str]]:
    """The stored config (with --set applied) or, for bare weights, the inferred one."""
    if source.stored_config is not None:
        experiment = _experiment_from_stored(source.stored_config).override(list(sets))
        notes = ["configuration read from the checkpoint"]
        if source.state_dict is not None:
            problems = _mismatches(source.state_dict, experiment.model)
            if problems:
                raise ConversionError(
                    f"{source.path}: the weights do not match the stored configuration: "
                    f"{'; '.join(problems[:6])}"
                )
        return experiment, notes
    if source.state_dict is None:
        raise ConversionError(f"{source.path}: an orbax checkpoint without a configuration")
    try:
        return infer_config(source.state_dict, source.format, sets)
    except ConversionError as err:
        raise ConversionError(f"{source.path}: {err}") from err


# -- verification --------------------------------------------------------------------------


def probe_batch(config: ModelConfig) -> dict[str, np.ndarray | None]:
    """A fixed batch: random tokens, conditions and nonzero eps (so sigma counts too)."""
    rng = np.random.default_rng(PROBE_SEED)
    shape = (PROBE_BATCH, config.sequence_length)
    return {
        "tokens": rng.integers(0, config.input_depth, shape).astype(np.int32),
        "condition": rng.uniform(size=PROBE_BATCH).astype(np.float32)
        if config.uses_condition
        else None,
        "eps": rng.standard_normal((PROBE_BATCH, config.z_size)).astype(np.float32),
    }


@functools.lru_cache(maxsize=8)
def _compiled_apply(config: ModelConfig) -> Any:
    """One jitted forward per config: op by op, every small op of the scans would compile."""
    return jax.jit(MusicVAE(config).apply)


def teacher_forced_difference(
    config: ModelConfig, state_dict: dict[str, np.ndarray], params: Any
) -> float:
    """Max |logits_torch - logits_flax| on the probe batch, both in float32 on CPU."""
    import torch

    from torch_reference.model import MusicVAE as TorchMusicVAE

    config = dataclasses.replace(config, compute_dtype="float32", dropout=0.0)
    batch = probe_batch(config)
    model = TorchMusicVAE(config)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    model.eval()
    condition = batch["condition"]
    with torch.no_grad():
        torch_logits = model(
            torch.from_numpy(batch["tokens"]).long(),
            None if condition is None else torch.from_numpy(condition),
            eps=torch.from_numpy(batch["eps"]),
        )["logits"].numpy()
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        flax_logits = _compiled_apply(config)(
            {"params": jax.device_put(params, cpu)}, batch["tokens"], condition, batch["eps"]
        )["logits"]
    return float(np.max(np.abs(torch_logits - np.asarray(flax_logits))))


# -- writing -------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_destination(destination: Path, target: str, force: bool) -> None:
    paths = [destination] if target == "orbax" else [destination, config_path_for(destination)]
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ConversionError(f"{', '.join(existing)} already exists; pass --force to replace it")
    if not destination.parent.is_dir():
        raise ConversionError(f"{destination.parent}: the destination's folder does not exist")


def _commit(temporary: Path, destination: Path) -> None:
    """Move a finished temporary into place; an old destination goes only once that worked."""
    backup = None
    if destination.exists() or destination.is_symlink():
        backup = destination.with_name(f".{destination.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(destination, backup)
    try:
        os.replace(temporary, destination)
    except OSError:
        if backup is not None:
            os.replace(backup, destination)
        raise
    if backup is not None:
        _remove(backup)


def _write_torch_like(
    path: Path, target: str, state_dict: dict[str, np.ndarray], config_json: str
) -> None:
    if target == "torch":
        import torch

        torch.save(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}, path
        )
    else:
        from safetensors.numpy import save_file

        save_file(
            {k: np.ascontiguousarray(v) for k, v in state_dict.items()},
            str(path),
            metadata={SAFETENSORS_CONFIG_KEY: config_json},
        )


def _reload(path: Path, target: str) -> tuple[dict[str, np.ndarray] | None, Any]:
    """Read back what was written: (state dict, None) or (None, params)."""
    if target == "orbax":
        _, params = checkpoints.load_params(path)
        return None, checkpoints.to_numpy(params)
    if target == "torch":
        return load_torch_checkpoint(path).state_dict, None
    from safetensors.numpy import load_file

    return load_file(str(path)), None


def _same(a: Any, b: Any) -> bool:
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(flat_a, flat_b, strict=True)
    )


def convert(
    src: Path,
    dst: Path,
    *,
    source_format: str = "auto",
    target: str | None = None,
    sets: Sequence[str] = (),
    force: bool = False,
    verify: bool = True,
    trainer_states: Path | None = None,
    tolerance: float = TOLERANCE,
) -> Report:
    """Convert SRC to DST; DST appears only complete, and only if verification passed.

    `target` defaults from DST's suffix (.pt/.pth: torch, .safetensors: safetensors,
    anything else: orbax).
    """
    src, dst = Path(src), Path(dst)
    if target is None:
        suffix = dst.suffix.lower()
        target = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}.get(
            suffix, "orbax"
        )
    if target not in TARGET_FORMATS:
        raise ConversionError(f"--to {target!r} is not one of {', '.join(TARGET_FORMATS)}")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConversionError(f"{dst}: the destination is the source")
    _check_destination(dst, target, force)

    source = read_source(src, source_format, trainer_states)
    experiment, notes = source_config(source, sets)
    if experiment.name == ExperimentConfig().name:
        experiment = dataclasses.replace(experiment, name=f"converted-{src.stem}")
    model = experiment.model
    try:
        if source.state_dict is not None:
            state_dict = source.state_dict
            params = torch_to_flax(state_dict, model)
        else:
            params = source.params
            state_dict = flax_to_torch(params, model)
    except ConversionError as err:
        raise ConversionError(f"{source.path}: {err}") from err

    config_json = json.dumps(experiment.to_dict(), indent=1)
    tag = uuid.uuid4().hex[:8]
    temporary = dst.with_name(f".{dst.name}.tmp-{tag}")
    temporary_config = dst.with_name(f".{config_path_for(dst).name}.tmp-{tag}")
    report = Report(source, dst, target, experiment, notes)
    try:
        if target == "orbax":
            checkpoints.save_params_checkpoint(temporary, params, experiment.to_dict())
        else:
            _write_torch_like(temporary, target, state_dict, config_json)
            temporary_config.write_text(config_json)
            report.config_path = config_path_for(dst)
        written_sd, written_params = _reload(temporary, target)
        expected = params if written_params is not None else state_dict
        if not _same(written_params if written_params is not None else written_sd, expected):
            raise ConversionError(f"{dst}: the written weights differ from the converted ones")
        if verify:
            report.max_abs_difference = _verify(model, source, written_sd, written_params)
            logger.info("verification: max |logits| difference %.3g", report.max_abs_difference)
            if not report.max_abs_difference <= tolerance:
                raise VerificationError(
                    f"verification failed: teacher-forced logits of torch and Flax differ by up "
                    f"to {report.max_abs_difference:.3g} (> {tolerance:g}); {dst} not written"
                )
        if target != "orbax":
            _commit(temporary_config, config_path_for(dst))
        _commit(temporary, dst)
    finally:
        for leftover in (temporary, temporary_config):
            if leftover.exists():
                _remove(leftover)
    logger.info("wrote %s (%s)", dst, target)
    return report


def _verify(
    model: ModelConfig,
    source: Source,
    written_sd: dict[str, np.ndarray] | None,
    written_params: Any,
) -> float:
    """Torch runs the torch-side weights, Flax the Flax-side ones, one side being the output."""
    if written_params is not None:  # to orbax: torch side from the source
        torch_side = source.state_dict
        if torch_side is None:
            torch_side = flax_to_torch(source.params, model)
        return teacher_forced_difference(model, torch_side, written_params)
    assert written_sd is not None
    if source.params is not None:
        return teacher_forced_difference(model, written_sd, source.params)
    return teacher_forced_difference(model, source.state_dict, torch_to_flax(written_sd, model))
