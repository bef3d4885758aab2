"""The training loop: one command from a laptop CPU to a TPU pod slice.

Data parallel over a `data` x `model` device mesh with jit and NamedShardings (the
batch split over `data`, parameters replicated or, with `mesh.shard_params`, split
over `model`). On several hosts every process runs the same command, reads its own
shard of the records, and the global batch is assembled from process-local data.

Exact resumption: all randomness of step n comes from `fold_in(key(seed), n)`, the
schedules are functions of n, and a checkpoint holds the parameters, optimizer
state, step, key and every process's data-loader position. A run resumed from any
checkpoint therefore computes the same updates as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_musicvae import checkpoints as ckpt
from jax_musicvae import schedules
from jax_musicvae.config import ConfigError
from jax_musicvae.data.loader import make_loader
from jax_musicvae.data.source import (
    WindowSource,
    dataset_grid,
    dataset_mismatch,
    load_manifest,
    most_frequent_token,
)
from jax_musicvae.experiment import ExperimentConfig
from jax_musicvae.metrics_writer import METRICS_FILE, MetricsWriter, plot_curves
from jax_musicvae.models import MusicVAE, init_params
from jax_musicvae.statistics import attribute_quantiles, gaussianise
from jax_musicvae.steps import (
    TRAIN_STEP_COMPILER_OPTIONS,
    create_state,
    draw_noise,
    eval_step,
    train_step,
)

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
MODEL_AXIS = "model"
_LOADER_STATE_BYTES = 1 << 16


class TrainingError(RuntimeError):
    """The run cannot continue (too many non-finite updates, bad workdir...)."""


def initialize_distributed(config: ExperimentConfig) -> None:
    """jax.distributed.initialize when configured; arguments left empty auto-detect (TPU)."""
    mesh = config.mesh
    if not mesh.distributed or jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if mesh.coordinator_address:
        kwargs["coordinator_address"] = mesh.coordinator_address
    if mesh.num_processes:
        kwargs["num_processes"] = mesh.num_processes
    if mesh.process_id >= 0:
        kwargs["process_id"] = mesh.process_id
    jax.distributed.initialize(**kwargs)
    logger.info("process %d of %d", jax.process_index(), jax.process_count())


def make_mesh(config: ExperimentConfig) -> Mesh:
    """A (data, model) mesh over all devices, or the first data x model on one host."""
    count = jax.device_count()
    model = config.mesh.model
    data = config.mesh.data if config.mesh.data != -1 else count // model
    used = data * model
    if used > count or (used < count and jax.process_count() > 1) or used < 1:
        raise ConfigError(
            f"mesh.data={config.mesh.data} x mesh.model={model} does not fit {count} devices "
            f"of {jax.process_count()} process(es)"
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh(
        (data, model), (DATA_AXIS, MODEL_AXIS), axis_types=auto, devices=jax.devices()[:used]
    )


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh, shard: bool) -> NamedSharding:
    """Replicated, or split over `model` along the largest divisible dimension."""
    size = mesh.shape[MODEL_AXIS]
    if shard and size > 1:
        dims = [d for d in range(len(shape)) if shape[d] % size == 0 and shape[d] >= size]
        if dims:
            dim = max(dims, key=lambda d: shape[d])
            spec = [None] * len(shape)
            spec[dim] = MODEL_AXIS
            return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())


def tree_sharding(tree: Any, mesh: Mesh, shard: bool) -> Any:
    return jax.tree.map(lambda x: leaf_sharding(np.shape(x), mesh, shard), tree)


def check_dataset(data_dir: Path, config: ExperimentConfig) -> dict[str, Any]:
    """The dataset's manifest, after checking it fits the model (depth, length, condition)."""
    manifest = load_manifest(data_dir)
    model = config.model
    problem = dataset_mismatch(
        manifest, model.input_depth, model.sequence_length, model.steps_per_bar
    )
    if problem:
        raise ConfigError(f"{data_dir}: {problem}")
    return manifest


def freeze_attribute_transform(config: ExperimentConfig, data_dir: Path) -> ExperimentConfig:
    """Fill loss.attribute_quantiles from the training split, once (a resumed run keeps them)."""
    loss = config.loss
    if not loss.uses_attribute or loss.attribute_quantiles:
        return config
    source = WindowSource(data_dir, config.data.train_split, config.data.danceability)
    values = np.asarray(source.condition, np.float32)
    if np.isnan(values).any():
        raise ConfigError(
            f"{data_dir}: {int(np.isnan(values).sum())} training windows have no "
            f"danceability; the attribute loss needs one for every window (use "
            f"--set data.danceability=window, or build the dataset with --missing drop)"
        )
    try:
        quantiles = attribute_quantiles(values)
    except ValueError as error:
        level = config.data.danceability
        raise ConfigError(f"{data_dir}: {level}-level danceability: {error}") from None
    logger.info(
        "attribute transform frozen from %d %s-level values (median %.3f)",
        len(values),
        config.data.danceability,
        quantiles[len(quantiles) // 2],
    )
    return dataclasses.replace(
        config, loss=dataclasses.replace(loss, attribute_quantiles=quantiles)
    )


@dataclasses.dataclass
class Run:
    """Everything the loop carries between steps besides the TrainState."""

    step: int
    key: jax.Array
    nonfinite_run: int = 0


class Trainer:
    """Jitted, sharded train and eval steps for one config on one mesh.

    The state's shardings come from its abstract shape, so the train step is
    compiled once for a fresh start, a resume and a fine-tune alike.
    """

    def __init__(self, config: ExperimentConfig, mesh: Mesh) -> None:
        self.config = config
        self.mesh = mesh
        self.batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
        self.replicated = NamedSharding(mesh, P())
        model, loss, sampling = config.model, config.loss, config.sampling
        global_batch = config.train.batch_size
        if global_batch % jax.process_count() or global_batch % mesh.shape[DATA_AXIS]:
            raise ConfigError(
                f"train.batch_size={global_batch} must divide over {jax.process_count()} "
                f"processes and {mesh.shape[DATA_AXIS]} data-parallel devices"
            )
        abstract = jax.eval_shape(
            lambda: create_state(model, config.optim, init_params(model, jax.random.key(0)))
        )
        self.state_sharding = tree_sharding(abstract, mesh, config.mesh.shard_params)
        self.abstract_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            abstract,
            self.state_sharding,
        )
        scheduled = sampling.schedule != "teacher_forcing"
        use_dropout = model.dropout > 0

        def step_fn(state, batch, key, step, beta, probability, adversary_weight):
            noise_key, dropout_key = jax.random.split(jax.random.fold_in(key, step))
            noise = draw_noise(noise_key, global_batch, model, scheduled, sampling.token_dropout)
            return train_step(
                state,
                batch,
                noise,
                beta,
                probability,
                dropout_key if use_dropout else None,
                model=model,
                loss=loss,
                sampling=sampling,
                adversary_weight=adversary_weight,
            )

        def eval_fn(params, batch, key):
            eps = draw_noise(key, batch["tokens"].shape[0], model, False).eps
            return eval_step(params, batch, eps, model=model, loss=loss)

        def reconstruct_fn(params, tokens, condition):
            vae = MusicVAE(model)
            z = vae.apply({"params": params}, tokens, condition)["z"]  # eps = 0: z = mu
            return vae.apply({"params": params}, z, condition, method=MusicVAE.generate)["tokens"]

        repl = self.replicated
        self._train = jax.jit(
            step_fn,
            in_shardings=(self.state_sharding, self.batch_sharding, repl, repl, repl, repl, repl),
            out_shardings=(self.state_sharding, repl),
            donate_argnums=0,
            compiler_options=TRAIN_STEP_COMPILER_OPTIONS,
        )
        self._eval = jax.jit(eval_fn)
        self.reconstruct = jax.jit(reconstruct_fn)

    def initial_state(self, params: Any) -> train_state.TrainState:
        """A fresh TrainState of `params` placed on the mesh (replicated or sharded).

        Its leaves go into the abstract state's tree, so every state this trainer
        makes has the same static fields (optimizer, apply_fn) and one compiled step.
        """
        state = create_state(self.config.model, self.config.optim, params)
        state = jax.tree.unflatten(jax.tree.structure(self.abstract_state), jax.tree.leaves(state))
        return jax.device_put(state, self.state_sharding)

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Assemble the global batch from each process's rows (rows ordered by process)."""
        loss = self.config.loss
        if loss.uses_attribute:
            local = {
                **local,
                "attribute": gaussianise(local["condition"], loss.attribute_quantiles),
            }
        out = {}
        for name, value in local.items():
            if name == "condition" and not self.config.model.uses_condition:
                continue
            shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
            out[name] = jax.make_array_from_process_local_data(self.batch_sharding, value, shape)
        return out

    def train_step(
        self, state: train_state.TrainState, batch: dict[str, jax.Array], run: Run
    ) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
        beta = np.float32(schedules.beta(run.step, self.config.loss))
        probability = np.float32(schedules.sampling_probability(run.step, self.config.sampling))
        adversary = np.float32(schedules.adversary_weight(run.step, self.config.loss))
        return self._train(state, batch, run.key, np.int32(run.step), beta, probability, adversary)

    def evaluate(self, params: Any, batches: list[dict[str, jax.Array]], seed: int) -> dict:
        """Mean validation metrics over fixed batches with fixed noise."""
        key = jax.random.key(seed + 1)
        totals: dict[str, float] = {}
        for index, batch in enumerate(batches):
            metrics = jax.device_get(self._eval(params, batch, jax.random.fold_in(key, index)))
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
        return totals


def _encode_states(state: bytes) -> np.ndarray:
    if len(state) > _LOADER_STATE_BYTES - 4:
        raise TrainingError(f"data-loader state of {len(state)} bytes is too large to store")
    buffer = np.zeros(_LOADER_STATE_BYTES, np.uint8)
    buffer[:4] = np.frombuffer(np.uint32(len(state)).tobytes(), np.uint8)
    buffer[4 : 4 + len(state)] = np.frombuffer(state, np.uint8)
    return buffer


def gather_loader_states(state: bytes) -> list[str]:
    """Every process's loader position, in process order (collective on a pod)."""
    if jax.process_count() == 1:
        return [state.decode()]
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(_encode_states(state)))
    gathered = gathered.reshape(jax.process_count(), _LOADER_STATE_BYTES)
    states = []
    for row in gathered:
        length = int(np.frombuffer(row[:4].tobytes(), np.uint32)[0])
        states.append(row[4 : 4 + length].tobytes().decode())
    return states


class _Loaders:
    """The training iterator (checkpointable) and the fixed evaluation batches."""

    def __init__(self, config: ExperimentConfig, data_dir: Path, trainer: Trainer) -> None:
        train = config.train
        local = train.batch_size // jax.process_count()
        common = dict(
            batch_size=local,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            worker_count=config.data.worker_count,
            danceability=config.data.danceability,
        )
        self.train_source = WindowSource(
            data_dir, config.data.train_split, config.data.danceability
        )
        self.train_loader = make_loader(
            data_dir, config.data.train_split, seed=train.seed, shuffle=True, **common
        )
        self.iterator: Iterator = iter(self.train_loader)
        # A fixed random sample spread over all songs of the split, never its first windows
        # (they come from a few songs and are not representative).
        eval_loader = make_loader(
            data_dir, config.data.eval_split, seed=train.seed, shuffle=True, num_epochs=1, **common
        )
        self.eval_batches = []
        for batch in eval_loader:
            self.eval_batches.append(trainer.global_batch(batch))
            if len(self.eval_batches) == train.eval_batches:
                break

    def next(self) -> dict[str, np.ndarray]:
        return next(self.iterator)

    def state(self) -> bytes:
        return self.iterator.get_state()

    def restore(self, states: list[str]) -> None:
        if len(states) != jax.process_count():
            raise TrainingError(
                f"checkpoint holds loader positions of {len(states)} processes, this run has "
                f"{jax.process_count()}; resume on the same number of hosts"
            )
        state = json.loads(states[jax.process_index()])
        source = self.train_source
        if state.get("data_source") == source.path_repr():  # saved before content names
            state["data_source"] = repr(source)
        if state.get("data_source") != repr(source):
            raise TrainingError(
                f"the checkpoint's data-loader position belongs to {state.get('data_source')}, "
                f"this run reads {source!r}: resume with the dataset the run was trained on "
                "(--data; it may have moved, not changed)"
            )
        self.iterator.set_state(json.dumps(state, indent=4).encode())


def _save(
    manager: ocp.CheckpointManager,
    state: train_state.TrainState,
    run: Run,
    config: ExperimentConfig,
    loaders: _Loaders,
    eval_metrics: dict[str, float] | None,
) -> None:
    progress = {
        "step": run.step,
        "key": np.asarray(jax.random.key_data(run.key)).tolist(),
        "nonfinite_run": run.nonfinite_run,
        "loader": gather_loader_states(loaders.state()),
        "process_count": jax.process_count(),
        "metrics": eval_metrics or {},
    }
    args = ocp.args.Composite(
        **{
            ckpt.PARAMS: ocp.args.StandardSave(state.params),
            ckpt.OPT_STATE: ocp.args.StandardSave(
                {"step": state.step, "opt_state": state.opt_state}
            ),
            ckpt.CONFIG: ocp.args.JsonSave(config.to_dict()),
            ckpt.PROGRESS: ocp.args.JsonSave(progress),
        }
    )
    metrics = {"elbo": eval_metrics["elbo"]} if eval_metrics else None
    manager.save(run.step, args=args, metrics=metrics, force=True)


def _restore(
    manager: ocp.CheckpointManager, step: int, trainer: Trainer, loaders: _Loaders
) -> tuple[train_state.TrainState, Run]:
    """State, run counters and loader positions of checkpoint `step` onto this mesh."""
    abstract = trainer.abstract_state
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    old_layout = ckpt.has_split_directions(ckpt.abstract_tree(manager, step, ckpt.PARAMS, local))

    def restore(item: str, target: Any) -> Any:
        """One item onto `target`, through the old layout if the checkpoint has it."""
        if not old_layout:
            return ckpt.restore_item(manager, step, item, target)
        restored = ckpt.stack_directions(
            ckpt.restore_item(manager, step, item, ckpt.split_directions(target, local))
        )
        return jax.tree.map(lambda a, t: jax.device_put(a, t.sharding), restored, target)

    state = trainer.initial_state(restore(ckpt.PARAMS, abstract.params))
    progress = ckpt.read_progress(manager, step)
    if ckpt.has_item(manager, step, ckpt.OPT_STATE):
        opt = restore(ckpt.OPT_STATE, {"step": abstract.step, "opt_state": abstract.opt_state})
        state = state.replace(step=opt["step"], opt_state=opt["opt_state"])
    else:
        logger.info("checkpoint step %d has no optimizer state: fine-tuning from it", step)
    key = (
        jax.random.wrap_key_data(np.asarray(progress["key"], np.uint32))
        if "key" in progress
        else jax.random.key(trainer.config.train.seed)
    )
    if "loader" in progress:
        loaders.restore(progress["loader"])
    run = Run(
        step=int(progress.get("step", step)),
        key=key,
        nonfinite_run=int(progress.get("nonfinite_run", 0)),
    )
    return state, run


def gather(array: jax.Array) -> np.ndarray:
    """A global array as one host numpy array on every process (collective)."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def save_reconstructions(
    trainer: Trainer,
    params: Any,
    loaders: _Loaders,
    manifest: dict[str, Any],
    out: Path,
    count: int,
) -> Path | None:
    """Piano rolls of a few validation windows next to their argmax reconstructions."""
    from jax_musicvae.data.pianoroll import save_pianoroll_grid
    from jax_musicvae.data.representations import get_representation

    if not loaders.eval_batches or count < 1:
        return None
    batch = loaders.eval_batches[0]
    tokens = trainer.reconstruct(params, batch["tokens"], batch.get("condition"))
    tokens, originals = (np.asarray(gather(x)) for x in (tokens, batch["tokens"]))
    if jax.process_index() != 0:
        return None
    count = min(count, originals.shape[0])
    sequences, titles = [], []
    for i in range(count):
        sequences += [originals[i], tokens[i]]
        titles += [f"validation {i}", f"reconstruction {i}"]
    rep = get_representation(manifest["representation"])
    return save_pianoroll_grid(sequences, rep, out, titles=titles, grid=dataset_grid(manifest))


def prepare_config(config: ExperimentConfig, data_dir: Path) -> tuple[ExperimentConfig, dict]:
    """The config as it will be stored (the dataset's path and grid, the frozen attribute
    transform) and the dataset's manifest, after checking the two fit."""
    manifest = check_dataset(data_dir, config)
    # The dataset's grid is stored with the model: generation writes its time signature.
    data = dataclasses.replace(config.data, path=str(data_dir), grid=dataset_grid(manifest).name)
    config = freeze_attribute_transform(dataclasses.replace(config, data=data), data_dir)
    return config, manifest


def check_workdir(workdir: Path, resume: bool) -> Path:
    """The checkpoint folder, after checking that `resume` matches what is there."""
    checkpoint_dir = workdir / ckpt.CHECKPOINT_DIR
    existing = checkpoint_dir.is_dir() and any(p.name.isdigit() for p in checkpoint_dir.iterdir())
    if existing and not resume:
        raise TrainingError(
            f"{workdir} already holds checkpoints: pass --resume or a new --workdir"
        )
    if resume and not existing:
        raise TrainingError(f"--resume: {checkpoint_dir} holds no checkpoint")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
    return checkpoint_dir


class _TrainLog:
    """Training metrics averaged over each logging window, throughput, the progress bar
    and the count of non-finite updates in a row."""

    def __init__(self, config: ExperimentConfig, writer: MetricsWriter, run: Run) -> None:
        self.config = config
        self.writer = writer
        self.sums: dict[str, float] = {}
        self.count = 0
        self.window_start, self.window_examples = time.monotonic(), 0
        self.examples_per_second = float("nan")
        self.progress_bar = None
        if jax.process_index() == 0 and config.logging.progress_bar:
            from tqdm import tqdm

            total = config.train.num_steps
            self.progress_bar = tqdm(total=total, initial=run.step, unit="step", dynamic_ncols=True)

    def add(self, step: int, metrics: dict[str, Any], run: Run) -> None:
        """Account one finished step's metrics (host values)."""
        tc = self.config.train
        self.window_examples += tc.batch_size
        if self.progress_bar is not None:
            self.progress_bar.update(1)
        if not metrics["skipped"]:
            run.nonfinite_run = 0
            for name, value in metrics.items():
                self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.count += 1
            return
        run.nonfinite_run += 1
        logger.warning(
            "step %d: non-finite loss or gradient (loss %s, grad norm %s); update skipped",
            step,
            metrics["loss"],
            metrics["grad_norm"],
        )
        self.writer.write(step, "nonfinite", {"loss": metrics["loss"], "skipped": 1.0})
        if run.nonfinite_run >= tc.max_consecutive_nonfinite:
            raise TrainingError(
                f"{run.nonfinite_run} non-finite updates in a row (train."
                f"max_consecutive_nonfinite={tc.max_consecutive_nonfinite}) at step "
                f"{step}; lower optim.learning_rate or check the data"
            )

    def write(self, step: int) -> None:
        """Write the window's means, throughput and learning rate; start a new window."""
        now = time.monotonic()
        self.examples_per_second = self.window_examples / max(now - self.window_start, 1e-9)
        self.window_start, self.window_examples = now, 0
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        means["examples_per_second"] = self.examples_per_second
        means["learning_rate"] = schedules.learning_rate(step, self.config.optim)
        self.writer.write(step, "train", means)
        self.sums, self.count = {}, 0
        if self.progress_bar is not None:
            self.progress_bar.set_postfix(
                loss=f"{means.get('loss', math.nan):.3f}",
                acc=f"{means.get('accuracy', math.nan):.3f}",
                ex_s=f"{self.examples_per_second:.0f}",
            )

    def close(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()


def _evaluate(
    trainer: Trainer,
    params: Any,
    loaders: _Loaders,
    writer: MetricsWriter,
    step: int,
    baseline: float,
) -> dict[str, float]:
    metrics = trainer.evaluate(params, loaders.eval_batches, trainer.config.train.seed)
    writer.write(step, "eval", metrics)
    logger.info(
        "step %d validation: elbo %.2f recon %.2f kl %.2f bits accuracy %.4f "
        "greedy from mu %.4f (shuffled %.4f, baseline %.4f)",
        step,
        metrics["elbo"],
        metrics["recon"],
        metrics["kl_bits"],
        metrics["accuracy"],
        metrics["greedy_accuracy"],
        metrics["shuffled_accuracy"],
        baseline,
    )
    return metrics


def _loop(
    trainer: Trainer,
    state: train_state.TrainState,
    run: Run,
    loaders: _Loaders,
    manager: ocp.CheckpointManager,
    log: _TrainLog,
    baseline: float,
) -> tuple[train_state.TrainState, dict[str, float]]:
    """Train until `num_steps` or `max_seconds`, logging, evaluating and checkpointing.

    A step's metrics are fetched after the next step is dispatched, so the host
    prepares the next batch while the device computes; they are all in before any
    log, evaluation or checkpoint.
    """
    config, tc = trainer.config, trainer.config.train
    started = time.monotonic()
    eval_metrics: dict[str, float] = {}
    last_eval = -1
    pending: tuple[int, Any] | None = None
    while run.step < tc.num_steps:
        if tc.max_seconds and time.monotonic() - started > tc.max_seconds:
            logger.info("train.max_seconds=%s reached at step %d", tc.max_seconds, run.step)
            break
        batch = trainer.global_batch(loaders.next())
        state, metrics = trainer.train_step(state, batch, run)
        run.step += 1
        if pending is not None:
            log.add(pending[0], jax.device_get(pending[1]), run)
        pending = (run.step, metrics)
        final = run.step == tc.num_steps
        logged = run.step % tc.log_every == 0 or final
        evaluated = run.step % tc.eval_every == 0 or final
        saved = run.step % tc.checkpoint_every == 0 or final
        if not (logged or evaluated or saved):
            continue
        log.add(run.step, jax.device_get(metrics), run)
        pending = None
        if logged:
            log.write(run.step)
        if evaluated:
            eval_metrics = _evaluate(trainer, state.params, loaders, log.writer, run.step, baseline)
            last_eval = run.step
        if saved:
            _save(manager, state, run, config, loaders, eval_metrics if evaluated else None)
    if pending is not None:
        log.add(pending[0], jax.device_get(pending[1]), run)
    if last_eval != run.step:
        eval_metrics = _evaluate(trainer, state.params, loaders, log.writer, run.step, baseline)
    if manager.latest_step() != run.step:
        _save(manager, state, run, config, loaders, eval_metrics)
    manager.wait_until_finished()
    return state, eval_metrics


def train(
    config: ExperimentConfig, data_dir: Path, workdir: Path, *, resume: bool = False
) -> dict[str, Any]:
    """Train `config` on dataset `data_dir`, writing logs and checkpoints to `workdir`.

    Returns a summary: final step, last validation metrics, baseline accuracy,
    examples/s and the paths of the written figures.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    initialize_distributed(config)
    data_dir, workdir = Path(data_dir), Path(workdir)
    config, manifest = prepare_config(config, data_dir)
    checkpoint_dir = check_workdir(workdir, resume)
    tc = config.train

    mesh = make_mesh(config)
    trainer = Trainer(config, mesh)
    loaders = _Loaders(config, data_dir, trainer)
    manager = ckpt.make_manager(checkpoint_dir, keep=tc.keep, async_saves=tc.async_checkpoints)
    if resume:
        state, run = _restore(
            manager, ckpt.choose_step(manager, None, best=False), trainer, loaders
        )
        logger.info("resumed %s at step %d", checkpoint_dir, run.step)
    else:
        state = trainer.initial_state(init_params(config.model, jax.random.key(tc.seed)))
        run = Run(step=0, key=jax.random.key(tc.seed))

    writer = MetricsWriter(
        workdir,
        enabled=jax.process_index() == 0,
        resume_step=run.step if resume else None,
        wandb=config.logging.wandb,
        wandb_project=config.logging.wandb_project,
        run_name=config.name,
        config=config.to_dict(),
    )
    token = most_frequent_token(data_dir, config.data.train_split)
    baseline = float(np.mean([np.mean(gather(b["tokens"]) == token) for b in loaders.eval_batches]))
    if not resume:
        writer.write(0, "data", {"baseline_accuracy": baseline})
    logger.info(
        "%s: %d devices, mesh %s, global batch %d, baseline (most frequent token) accuracy "
        "%.4f on the evaluation windows",
        config.name,
        mesh.size,
        dict(mesh.shape),
        tc.batch_size,
        baseline,
    )

    started = time.monotonic()
    log = _TrainLog(config, writer, run)
    try:
        state, eval_metrics = _loop(trainer, state, run, loaders, manager, log, baseline)
    finally:
        manager.close()
        log.close()
        writer.close()
    seconds = time.monotonic() - started
    return {
        "step": run.step,
        "eval": eval_metrics,
        "baseline_accuracy": baseline,
        "examples_per_second": log.examples_per_second,
        "seconds": seconds,
        "figures": _figures(trainer, state.params, loaders, manifest, workdir),
        "params": state.params,
    }


def _figures(
    trainer: Trainer, params: Any, loaders: _Loaders, manifest: dict[str, Any], workdir: Path
) -> dict[str, str]:
    """The curves and reconstructions pictures (written by the lead process)."""
    recon = save_reconstructions(
        trainer,
        params,
        loaders,
        manifest,
        workdir / "reconstructions.png",
        trainer.config.train.num_reconstructions,
    )
    if jax.process_index() != 0:
        return {}
    figures = {"curves": str(plot_curves(workdir / METRICS_FILE, workdir / "curves.png"))}
    if recon is not None:
        figures["reconstructions"] = str(recon)
    return figures
