"""Checkpoint layout shared by the trainer, the converter and the generation commands.

A training workdir holds `checkpoints/`, an orbax CheckpointManager directory with
one folder per step::

    WORKDIR/checkpoints/<step>/params     StandardSave: the model parameters
    WORKDIR/checkpoints/<step>/opt_state  StandardSave: optax state (absent when converted)
    WORKDIR/checkpoints/<step>/config     JsonSave: the full ExperimentConfig as a dict
    WORKDIR/checkpoints/<step>/progress   JsonSave: step, RNG key, loader positions, metrics

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed during a save leaves no half-written step that could be restored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PARAMS = "params"
OPT_STATE = "opt_state"
CONFIG = "config"
PROGRESS = "progress"
_HANDLERS = {
    PARAMS: ocp.StandardCheckpointHandler,
    OPT_STATE: ocp.StandardCheckpointHandler,
    CONFIG: ocp.JsonCheckpointHandler,
    PROGRESS: ocp.JsonCheckpointHandler,
}


class CheckpointError(FileNotFoundError):
    """A path is not a checkpoint, or lacks the step or item asked for."""


def make_manager(
    directory: Path,
    *,
    keep: int = 3,
    keep_best: bool = True,
    async_saves: bool = True,
    read_only: bool = False,
) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the last `keep` steps plus the best validation ELBO."""
    policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best:
        policies.append(
            ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics["elbo"],
                reverse=False,
                n=1,
                keep_checkpoints_without_metrics=False,
            )
        )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_saves,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=options,
        item_handlers={name: handler() for name, handler in _HANDLERS.items()},
    )


def save_params_checkpoint(
    directory: Path, params: Any, config: dict[str, Any], step: int = 0
) -> None:
    """Write a parameters-only checkpoint into workdir `directory` (what a converter makes).

    `musicvae train --resume --workdir directory` fine-tunes from it with a fresh
    optimizer state; `load_params(directory)` and the generation commands read it.
    """
    manager = make_manager(Path(directory) / CHECKPOINT_DIR, keep_best=False, async_saves=False)
    try:
        args = ocp.args.Composite(
            **{
                PARAMS: ocp.args.StandardSave(params),
                CONFIG: ocp.args.JsonSave(config),
                PROGRESS: ocp.args.JsonSave({"step": step}),
            }
        )
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
    finally:
        manager.close()
    logger.info("wrote parameters checkpoint %s (step %d)", directory, step)


def _is_step_dir(path: Path) -> bool:
    return (path / PARAMS).is_dir() and (path / CONFIG).is_dir()


def resolve(path: Path) -> tuple[Path, int | None]:
    """(manager directory, step) for a workdir, a manager directory or a step folder.

    The step is None unless `path` names one step folder.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or workdir")
    if _is_step_dir(path):
        try:
            return path.parent, int(path.name)
        except ValueError:
            raise CheckpointError(f"{path}: step folder name is not a step number") from None
    for candidate in (path / CHECKPOINT_DIR, path):
        if candidate.is_dir() and any(
            child.name.isdigit() and _is_step_dir(child) for child in candidate.iterdir()
        ):
            return candidate, None
    raise CheckpointError(
        f"{path}: not a checkpoint (expected a workdir with {CHECKPOINT_DIR}/<step>/"
        f"{{{PARAMS},{CONFIG}}}, a checkpoint directory or one step folder)"
    )


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The kept step with the highest validation ELBO, or None when none was evaluated."""
    best: tuple[float, int] | None = None
    for step in manager.all_steps():
        progress = read_progress(manager, step)
        elbo = progress.get("metrics", {}).get("elbo")
        if elbo is not None and (best is None or elbo > best[0]):
            best = (float(elbo), step)
    return None if best is None else best[1]


def choose_step(manager: ocp.CheckpointManager, step: int | None, best: bool) -> int:
    """The step to restore: the given one, the best by ELBO, or the latest."""
    directory = manager.directory
    if step is not None:
        if step not in manager.all_steps():
            raise CheckpointError(f"{directory}: no step {step} (have {manager.all_steps()})")
        return step
    chosen = best_step(manager) if best else manager.latest_step()
    if chosen is None and best:
        logger.warning("%s: no evaluated checkpoint; using the latest", directory)
        chosen = manager.latest_step()
    if chosen is None:
        raise CheckpointError(f"{directory}: contains no finished checkpoint")
    return chosen


def read_config(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    return manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[
        CONFIG
    ]


def read_progress(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    restored = manager.restore(step, args=ocp.args.Composite(**{PROGRESS: ocp.args.JsonRestore()}))
    return restored[PROGRESS] or {}


def has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
    return (Path(manager.directory) / str(step) / item).is_dir()


def abstract_tree(
    manager: ocp.CheckpointManager, step: int, item: str, sharding: jax.sharding.Sharding
) -> Any:
    """ShapeDtypeStructs of a saved item placed with `sharding` (any mesh or device)."""
    metadata = manager.item_metadata(step)[item]
    tree = getattr(metadata, "tree", metadata)
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        tree,
        is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"),
    )


def restore_item(manager: ocp.CheckpointManager, step: int, item: str, target: Any) -> Any:
    """Restore one StandardSave item onto the shapes and shardings of `target`."""
    args = ocp.args.Composite(**{item: ocp.args.StandardRestore(target)})
    return manager.restore(step, args=args)[item]


def _map_dicts(tree: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """`fn` applied to every dict of a pytree (params, or Adam moments within an optax
    state of tuples and named tuples), innermost first."""
    if isinstance(tree, dict):
        return fn({k: _map_dicts(v, fn) for k, v in tree.items()})
    if isinstance(tree, (tuple, list)):
        items = [_map_dicts(v, fn) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def _encoder_layers(tree: dict[str, Any], fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    encoder = tree.get("encoder")
    if not isinstance(encoder, dict) or "rnn" not in encoder:
        return tree
    return {**tree, "encoder": {**encoder, "rnn": fn(encoder["rnn"])}}


def has_split_directions(tree: Any) -> bool:
    """Whether a saved tree keeps the encoder's directions apart (`l{k}_fwd`/`l{k}_bwd`),
    the layout of checkpoints written before 2026-12-06."""
    rnn = tree.get("encoder", {}).get("rnn", {}) if isinstance(tree, dict) else {}
    return any(name.endswith("_fwd") for name in rnn)


def stack_directions(tree: Any) -> Any:
    """An old-layout tree in the current layout: each encoder layer's `l{k}_fwd` and
    `l{k}_bwd` weights stacked as `l{k}` (forward first)."""

    def stack(rnn: dict[str, Any]) -> dict[str, Any]:
        names = sorted({n.removesuffix("_fwd") for n in rnn if n.endswith("_fwd")})
        return {
            n: jax.tree.map(lambda f, b: jax.numpy.stack([f, b]), rnn[f"{n}_fwd"], rnn[f"{n}_bwd"])
            for n in names
        }

    return _map_dicts(tree, lambda d: _encoder_layers(d, stack))


def split_directions(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """The inverse of `stack_directions`: arrays split, ShapeDtypeStructs (the target an
    old-layout checkpoint is restored onto) narrowed and placed with `sharding`."""

    def part(x: Any, direction: int) -> Any:
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=sharding)
        return x[direction]

    def split(rnn: dict[str, Any]) -> dict[str, Any]:
        return {
            f"{n}_{name}": jax.tree.map(lambda x, d=d: part(x, d), w)
            for n, w in rnn.items()
            for d, name in enumerate(("fwd", "bwd"))
        }

    return _map_dicts(tree, lambda d: _encoder_layers(d, split))


def load_params(
    path: Path, *, best: bool = False, step: int | None = None
) -> tuple[dict[str, Any], Any]:
    """(experiment config dict, parameters on the first local device) of a checkpoint.

    `path` is a training workdir, its checkpoints/ folder or one step folder; by
    default the latest step, with `best=True` the one with the highest validation ELBO.
    """
    directory, named_step = resolve(Path(path))
    manager = make_manager(directory, read_only=True, async_saves=False)
    try:
        chosen = choose_step(manager, named_step if step is None else step, best)
        config = read_config(manager, chosen)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = abstract_tree(manager, chosen, PARAMS, device)
        params = restore_item(manager, chosen, PARAMS, target)
        if has_split_directions(params):
            params = stack_directions(params)
    finally:
        manager.close()
    logger.info("loaded parameters of %s step %d", directory, chosen)
    return config, params


def to_numpy(tree: Any) -> Any:
    """Host copies of a pytree of (possibly sharded) arrays."""
    return jax.tree.map(np.asarray, tree)
