"""The typed experiment configuration: model, loss, optimiser, sampling, data, training.

Configs live in `jax_musicvae/configs/NAME.py` as `get_config() -> ExperimentConfig` (the
JAX-ecosystem style). Every field can be overridden from the command line with
`--set section.field=value`; a key that names no field is an error naming the key,
so a typo cannot silently train the wrong model. The whole config is stored as JSON
in every checkpoint, and `from_dict` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from jax_musicvae.config import (
    ConfigError,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SamplingConfig,
    check_positive,
    replace_checked,
)
from jax_musicvae.data.meters import grid_named
from jax_musicvae.data.source import DANCEABILITY_LEVELS

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
# Execution switches that no longer exist; checkpoints written while they did still
# name them, so `from_dict` drops them. model.remat_scheduled_steps: scheduled
# sampling's gradient no longer saves per-step activations (docs/benchmarks.md,
# session 19).
RETIRED_FIELDS = {"model": {"remat_scheduled_steps"}}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which splits of a `musicvae data build` folder to read (the folder is --data)."""

    path: str = ""
    train_split: str = "train"
    eval_split: str = "validation"
    worker_count: int = 0
    # The danceability a window is conditioned on and regularised towards: its
    # song's value (`song`, the thesis's choice) or the rhythm estimate of the
    # window itself (`window`).
    danceability: str = "song"
    # The bar grid of the windows (`data.meters`); `musicvae train` stores the dataset's.
    grid: str = "duple"

    def __post_init__(self) -> None:
        if self.danceability not in DANCEABILITY_LEVELS:
            raise ConfigError(
                f"data.danceability={self.danceability!r} must be one of "
                f"{', '.join(DANCEABILITY_LEVELS)}"
            )
        try:
            grid_named(self.grid)
        except ValueError as error:
            raise ConfigError(f"data.grid: {error}") from None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. `batch_size` is global: split over processes and devices."""

    batch_size: int = 64
    num_steps: int = 1000
    max_seconds: float = 0.0
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 20
    checkpoint_every: int = 200
    keep: int = 3
    async_checkpoints: bool = True
    max_consecutive_nonfinite: int = 10
    seed: int = 0
    num_reconstructions: int = 4

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "num_steps",
            "eval_every",
            "eval_batches",
            "log_every",
            "checkpoint_every",
            "keep",
            "max_consecutive_nonfinite",
        ):
            check_positive(f"train.{name}", getattr(self, name))
        if self.max_seconds < 0:
            raise ConfigError("train.max_seconds must be >= 0 (0: no time limit)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh: `data` x `model` devices (-1: all that remain); multi-host opt-in."""

    data: int = -1
    model: int = 1
    shard_params: bool = False
    distributed: bool = False
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1

    def __post_init__(self) -> None:
        if self.model < 1 or (self.data < 1 and self.data != -1):
            raise ConfigError("mesh.data must be -1 or >= 1 and mesh.model >= 1")
        if self.shard_params and self.model == 1:
            raise ConfigError("mesh.shard_params needs mesh.model > 1")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Metrics backends; TensorBoard and JSONL always, Weights & Biases on request."""

    wandb: bool = False
    wandb_project: str = "jax-musicvae"
    progress_bar: bool = True


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    sampling: SamplingConfig = SamplingConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    logging: LoggingConfig = LoggingConfig()

    def __post_init__(self) -> None:
        if self.loss.uses_attribute and self.loss.attribute_dimension >= self.model.head_size:
            raise ConfigError(
                f"loss.attribute_dimension={self.loss.attribute_dimension} must be below the "
                f"{self.model.head_size} dimensions the encoder produces"
            )
        if self.loss.attribute_adversary > 0 and not self.model.adversary_hidden:
            raise ConfigError(
                "loss.attribute_adversary > 0 needs an adversary: set model.adversary_hidden > 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Rebuild from `to_dict` output; unknown sections or fields are errors."""
        config = cls()
        for key, value in values.items():
            current = _field(config, key, key)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected a mapping, got {value!r}")
                retired = RETIRED_FIELDS.get(key, set())
                value = {k: v for k, v in value.items() if k not in retired}
                known = {f.name for f in dataclasses.fields(current)}
                for name in value:
                    if name not in known:
                        raise ConfigError(
                            f"unknown config key {key}.{name}; known: {', '.join(sorted(known))}"
                        )
                value = replace_checked(current, **value)
            config = replace_checked(config, **{key: value})
        return config

    def override(self, assignments: list[str]) -> ExperimentConfig:
        """Apply `section.field=value` strings (the CLI's --set), typed by the field.

        Each section is checked once, with all of its assignments applied, and the
        checks across sections after that, so the order of the assignments does not
        matter (`model.latent_size=4 model.rhythm_hidden=0` from a config with a
        rhythm decoder reading 16 dimensions is as valid as the other order).
        """
        fields: dict[str, dict[str, Any]] = {}
        sections: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key, text = key.strip(), text.strip()
            if not sep or not key:
                raise ConfigError(f"--set {assignment!r}: expected key=value")
            head, _, rest = key.partition(".")
            current = _field(self, head, key)
            if not rest:
                sections[head] = _parse(key, current, text)
            elif not dataclasses.is_dataclass(current):
                raise ConfigError(f"unknown config key {key!r}: {head} has no fields")
            else:
                fields.setdefault(head, {})[rest] = _parse(key, _field(current, rest, key), text)
        for head, changes in fields.items():
            sections[head] = replace_checked(sections.get(head, getattr(self, head)), **changes)
        return replace_checked(self, **sections)


def _field(obj: Any, name: str, key: str) -> Any:
    if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"unknown config key {key!r}")
    return getattr(obj, name)


def _parse(key: str, current: Any, text: str) -> Any:
    """Parse `text` as the type of the field's current value."""
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):  # numbers, comma-separated; "" or "()" for none
            return tuple(float(part) for part in text.strip("()[] ").split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {type(current).__name__}") from None
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{key} is a section; set one of its fields, e.g. {key}.<field>=...")
    return text


def load_config(spec: str | Path) -> ExperimentConfig:
    """`get_config()` of a config file, given its path or a name in configs/."""
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = CONFIGS_DIR / f"{spec}.py"
    if not path.is_file():
        available = sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if p.stem != "__init__")
        raise ConfigError(f"config {spec}: no such file (configs: {', '.join(available)})")
    module_spec = importlib.util.spec_from_file_location(f"musicvae_config_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: has no get_config()")
    config = module.get_config()
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}")
    return config
