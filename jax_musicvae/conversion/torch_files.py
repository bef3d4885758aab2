"""Read torch checkpoint files without executing anything they contain.

Checkpoints are downloaded from strangers, and a pickle can call any importable
function while it loads. So:
- state dicts (and dicts of them) load with torch's weights-only unpickler;
- whole pickled modules, as the original magenta-torch project saved them
  (`torch.save(model)`, classes under `src.model` / `src.layers`), and its
  `trainer_states.pt` (pickled optimizer and scheduler) are read by
  `RestrictedUnpickler`: the classes they name become inert stand-ins, tensors are
  read by this module from the zip archive's `data/` records, and every other
  global is refused before anything is called.
Neither path imports the original project's code, and the restricted path needs
no torch at all.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import pickle
import pickletools
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

logger = logging.getLogger(__name__)

ORIGINAL_MODULES = ("src.model", "src.layers")
TRAINER_STATES = "trainer_states.pt"

# torch's typed storage classes, as pickled by torch.save, and the numpy dtype of their bytes.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
TORCH_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "bool": "bool",
}


class TorchFileError(ValueError):
    """A checkpoint file is unreadable, unsafe, or not what it claims to be."""


class UnsafePickleError(TorchFileError):
    """The pickle references a global that a checkpoint has no reason to contain."""


# -- inert stand-ins -------------------------------------------------------------------


class StandIn:
    """An instance of a pickled class, reduced to its recorded state; it has no behaviour.

    Unpickling calls `cls()` / `cls.__new__(cls)` and then sets `__dict__`; a stand-in
    accepts both and keeps the constructor arguments, so nothing of the original
    class ever runs.
    """

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) as pickle allows
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name}>"


_STAND_IN_CLASSES: dict[str, type[StandIn]] = {}


def _stand_in_class(module: str, name: str) -> type[StandIn]:
    """One StandIn subclass per pickled class name, so the name survives for reporting."""
    qualified = f"{module}.{name}"
    if qualified not in _STAND_IN_CLASSES:
        _STAND_IN_CLASSES[qualified] = type(name, (StandIn,), {"qualified_name": qualified})
    return _STAND_IN_CLASSES[qualified]


@dataclasses.dataclass(eq=False)
class InertParameter:
    """A torch Parameter's data; hashable by identity as optimizer state keys need."""

    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Stand-in for torch.FloatStorage & co.: only the element dtype matters."""

    name: str
    dtype: np.dtype


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> np.ndarray:
    """torch._utils._rebuild_tensor(_v2) on a numpy storage: a strided view, copied."""
    size, stride = tuple(size), tuple(stride)
    if size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if any(n == 0 for n in size):
            return np.zeros(size, storage.dtype)
        if offset < 0 or last >= storage.size or min(stride) < 0:
            raise TorchFileError(
                f"tensor of size {size} stride {stride} offset {offset} runs past its storage "
                f"of {storage.size} elements (truncated or corrupt file)"
            )
    elif offset >= storage.size:
        raise TorchFileError("scalar tensor lies past the end of its storage (corrupt file)")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> InertParameter:
    return InertParameter(data)


def _torch_device(*args: Any) -> str:
    return ":".join(str(a) for a in args)


def _defaultdict(*_: Any) -> dict:
    # The default factory is dropped: the result is only read, never grown.
    return {}


def _allowed_global(module: str, name: str) -> Any:
    """What a permitted global unpickles to; None when the global is refused."""
    if module in ORIGINAL_MODULES:
        return _stand_in_class(module, name)
    if module.startswith("torch.nn.modules.") or module in ("torch.nn.modules", "torch.nn"):
        return _stand_in_class(module, name)
    if module.startswith("torch.optim"):  # optimizer and scheduler classes in trainer states
        return _stand_in_class(module, name)
    if module == "torch" and name in STORAGE_DTYPES:
        return StorageType(name, STORAGE_DTYPES[name])
    if module == "torch" and name in TORCH_DTYPES:
        return TORCH_DTYPES[name]
    return {
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "device"): _torch_device,
        ("torch", "Size"): tuple,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): _defaultdict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("__builtin__", "dict"): dict,
        ("__builtin__", "list"): list,
        ("__builtin__", "tuple"): tuple,
    }.get((module, name))


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip archive's data.pkl with inert stand-ins; refuses other globals."""

    def __init__(self, data: bytes, read_record: Callable[[str], bytes], source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._read_record = read_record
        self._source = source
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle references {module}.{name}, "
                "which is not a model, tensor or container class; it could run code, so "
                "nothing from this file was executed"
            )
        return found

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchFileError(f"{self._source}: unknown persistent record {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise TorchFileError(f"{self._source}: storage record {key!r} has no storage type")
        if key not in self._storages:
            raw = self._read_record(f"data/{key}")
            needed = int(numel) * storage_type.dtype.itemsize
            if len(raw) < needed:
                raise TorchFileError(
                    f"{self._source}: tensor data record data/{key} holds {len(raw)} bytes, "
                    f"{needed} expected (truncated file)"
                )
            self._storages[key] = np.frombuffer(raw[:needed], dtype=storage_type.dtype)
        return self._storages[key]


# -- reading archives ------------------------------------------------------------------


@dataclasses.dataclass
class TorchArchive:
    """A torch zip archive's pickle and a reader for its records."""

    path: Path
    prefix: str
    pickle_bytes: bytes
    zip_file: zipfile.ZipFile

    def read_record(self, name: str) -> bytes:
        try:
            raw = self.zip_file.read(f"{self.prefix}/{name}")
        except KeyError as err:
            message = f"{self.path}: record {name} is missing (truncated file)"
            raise TorchFileError(message) from err
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise TorchFileError(f"{self.path}: record {name} is unreadable: {err}") from err
        return raw

    def global_names(self) -> set[str]:
        """Every string the pickle mentions, read by parsing, never by executing it."""
        names = set()
        try:
            for _opcode, arg, _pos in pickletools.genops(self.pickle_bytes):
                if isinstance(arg, str):
                    names.add(arg)
        except (ValueError, EOFError) as err:
            message = f"{self.path}: the pickle is corrupt or truncated: {err}"
            raise TorchFileError(message) from err
        return names


def open_archive(path: Path) -> TorchArchive:
    """Open a torch.save zip archive, with clear errors for every other kind of file."""
    path = Path(path)
    if not path.is_file():
        raise TorchFileError(f"{path}: no such file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80":  # a pickle protocol header
            raise TorchFileError(
                f"{path}: a bare pickle, not a torch zip archive (legacy torch<1.6 format or "
                "plain pickle); it is not read, as only zip archives can be checked safely"
            )
        if head == b"PK\x03\x04":
            raise TorchFileError(f"{path}: a damaged or truncated zip archive")
        raise TorchFileError(f"{path}: not a torch checkpoint (not a zip archive)")
    try:
        archive = zipfile.ZipFile(path)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(f"{path}: a zip archive but not a torch checkpoint (no data.pkl)")
        prefix = pickles[0].split("/")[0]
        names = set(archive.namelist())
        byteorder = (
            archive.read(f"{prefix}/byteorder").decode().strip()
            if f"{prefix}/byteorder" in names
            else "little"
        )
        data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise TorchFileError(f"{path}: damaged or truncated archive: {err}") from err
    if byteorder != "little":
        raise TorchFileError(f"{path}: {byteorder}-endian torch archives are not supported")
    return TorchArchive(path, prefix, data, archive)


def restricted_load(path: Path) -> Any:
    """Unpickle a torch archive with stand-ins only (module pickles, trainer states)."""
    archive = open_archive(path)
    try:
        return RestrictedUnpickler(archive.pickle_bytes, archive.read_record, archive.path).load()
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise TorchFileError(f"{path}: the pickle could not be read: {err}") from err


def is_module_pickle(archive: TorchArchive) -> bool:
    """Whether the archive pickles whole nn.Modules (the original's checkpoint class)."""
    return any(
        name.startswith((*ORIGINAL_MODULES, "torch.nn.modules")) for name in archive.global_names()
    )


def weights_only_load(path: Path) -> Any:
    """torch.load(weights_only=True) with failures reported against the file."""
    try:
        import torch
    except ImportError:  # torch is optional: the restricted reader refuses the same globals
        logger.info("torch is not installed; reading %s with the restricted unpickler", path)
        return _to_plain(restricted_load(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).splitlines()
        reason = next((line for line in detail if "global" in line.lower()), detail[0])
        raise UnsafePickleError(
            f"{path}: refused by torch's weights-only loader ({reason.strip()}); nothing from "
            "this file was executed"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise TorchFileError(f"{path}: torch could not read it: {err}") from err


def _to_plain(obj: Any) -> Any:
    """Tensors (torch or stand-in) to numpy, containers to dicts/lists, recursively."""
    if isinstance(obj, InertParameter):
        return obj.data
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a torch.Tensor
        tensor = obj.detach().cpu()
        return (tensor.float() if str(tensor.dtype) == "torch.bfloat16" else tensor).numpy()
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_plain(v) for v in obj)
    return obj


# -- what a checkpoint holds -----------------------------------------------------------


@dataclasses.dataclass
class TorchCheckpoint:
    """Model weights read from a torch file, with what else the file said about itself."""

    path: Path
    kind: str  # "state_dict" | "module_pickle" | "training_checkpoint"
    state_dict: dict[str, np.ndarray]
    class_name: str | None = None
    config: dict[str, Any] | None = None
    trainer_states: dict[str, Any] | None = None


STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
CONFIG_KEYS = ("config", "model_config", "experiment")


def _is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "detach") and hasattr(value, "shape"))


def _numpy_state_dict(mapping: Mapping[str, Any], path: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, value in mapping.items():
        array = _to_plain(value)
        if not isinstance(key, str) or not isinstance(array, np.ndarray):
            raise TorchFileError(f"{path}: state-dict entry {key!r} is not a tensor")
        if array.dtype == ml_dtypes.bfloat16:
            array = array.astype(np.float32)
        out[key] = array
    return out


def module_state_dict(root: StandIn, path: Path) -> dict[str, np.ndarray]:
    """`model.state_dict()` of a stand-in module tree: parameters and persistent buffers."""
    out: dict[str, np.ndarray] = {}

    def walk(module: Any, prefix: str) -> None:
        if not isinstance(module, StandIn):
            raise TorchFileError(f"{path}: {prefix or 'the root'} is not a module")
        state = module.__dict__
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if value is None or (group == "_buffers" and name in skip):
                    continue
                array = _to_plain(value)
                if not isinstance(array, np.ndarray):
                    raise TorchFileError(f"{path}: {prefix}{name} is not a tensor")
                out[prefix + name] = array
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    return out


def summarize_trainer_states(obj: Any) -> dict[str, Any]:
    """What trainer_states.pt holds: optimizer and scheduler settings, not their tensors."""

    def describe(value: Any) -> Any:
        if isinstance(value, StandIn):
            state = value.__dict__
            summary: dict[str, Any] = {"class": value.qualified_name}
            if "param_groups" in state:  # an optimizer
                groups = state["param_groups"]
                summary["param_groups"] = [
                    {k: v for k, v in g.items() if k != "params"} | {"params": len(g["params"])}
                    for g in groups
                ]
                summary["parameter_states"] = len(state.get("state") or {})
                steps = [
                    float(np.asarray(_to_plain(s.get("step", 0))))
                    for s in (state.get("state") or {}).values()
                    if isinstance(s, Mapping)
                ]
                if steps:
                    summary["step"] = max(steps)
            for key in ("last_epoch", "base_lrs", "_last_lr", "_step_count"):
                if key in state:
                    summary[key.lstrip("_")] = _to_plain(state[key])
            return summary
        if isinstance(value, Mapping):
            if "param_groups" in value and "state" in value:  # optimizer.state_dict()
                return {
                    "optimizer_state_dict": True,
                    "param_groups": [
                        {k: v for k, v in g.items() if k != "params"} for g in value["param_groups"]
                    ],
                    "parameter_states": len(value["state"]),
                }
            return {str(k): describe(v) for k, v in value.items()}
        if _is_tensor(value) or isinstance(value, InertParameter):
            return f"tensor {list(np.shape(_to_plain(value)))}"
        if isinstance(value, list | tuple):
            return [describe(v) for v in value]
        return value if isinstance(value, int | float | str | bool | type(None)) else repr(value)

    return describe(obj)


def read_trainer_states(path: Path) -> dict[str, Any]:
    """Read trainer_states.pt safely and summarise it (it is never needed for weights)."""
    return summarize_trainer_states(restricted_load(path))


def load_torch_checkpoint(path: Path, trainer_states: Path | None = None) -> TorchCheckpoint:
    """Weights (numpy) from a state dict, a training checkpoint dict or a whole-module pickle.

    A sibling `trainer_states.pt` (or the one given) is read safely and summarised; if
    it cannot be read that is a warning, since the weights do not depend on it.
    """
    path = Path(path)
    if path.name == TRAINER_STATES:
        raise TorchFileError(
            f"{path}: this is the optimizer/scheduler file, it holds no model weights; "
            "pass the model.pt next to it"
        )
    archive = open_archive(path)
    if is_module_pickle(archive):
        root = restricted_load(path)
        if not isinstance(root, StandIn):
            raise TorchFileError(f"{path}: the pickle holds {type(root).__name__}, not a module")
        checkpoint = TorchCheckpoint(
            path, "module_pickle", module_state_dict(root, path), class_name=root.qualified_name
        )
        logger.info("%s: whole pickled module %s read with stand-ins", path, root.qualified_name)
    else:
        checkpoint = _from_weights_only(path, weights_only_load(path))
    sibling = path.with_name(TRAINER_STATES)
    states = trainer_states or (sibling if sibling.is_file() else None)
    if states is not None:
        try:
            checkpoint.trainer_states = read_trainer_states(states)
            logger.info("%s: %s", states, checkpoint.trainer_states)
        except TorchFileError as err:
            if trainer_states is not None:
                raise
            logger.warning("%s (not needed for the weights; ignored)", err)
    return checkpoint


def _from_weights_only(path: Path, obj: Any) -> TorchCheckpoint:
    if not isinstance(obj, Mapping) or not obj:
        raise TorchFileError(f"{path}: holds {type(obj).__name__}, not a state dict")
    if all(_is_tensor(v) for v in obj.values()):
        return TorchCheckpoint(path, "state_dict", _numpy_state_dict(obj, path))
    for key in STATE_DICT_KEYS:
        nested = obj.get(key)
        if isinstance(nested, Mapping) and nested and all(_is_tensor(v) for v in nested.values()):
            config = next((obj[k] for k in CONFIG_KEYS if isinstance(obj.get(k), Mapping)), None)
            return TorchCheckpoint(
                path,
                "training_checkpoint",
                _numpy_state_dict(nested, path),
                config=_to_plain(dict(config)) if config is not None else None,
            )
    raise TorchFileError(
        f"{path}: a dict with keys {sorted(map(str, obj))[:8]} but no state dict (looked for a "
        f"mapping of tensors at the top level or under {', '.join(STATE_DICT_KEYS)})"
    )
