"""Make music with a trained model: sample, encode/decode, interpolate, reconstruct, edit.

`TrainedModel.load(checkpoint)` gives an object whose methods take melodies as
MIDI paths or bytes, `pretty_midi.PrettyMIDI` objects or token arrays and return token
arrays (`write_midi` turns them into files). Why it looks the way it does:

- Any batch size: work is cut into chunks of at most `batch_size` rows, and a
  chunk is padded to a power of two, so each jitted function compiles for a few
  shapes only and is reused across calls.
- Determinism: every row gets its own key, derived inside the jitted functions
  from (seed, row index), so the same seed gives the same output whatever the
  chunking, and no new seed or count triggers a compile.
- Temperature 0 decodes greedily (argmax); T > 0 samples softmax(logits / T).
- A melody longer than one window (`num_bars` bars) is cut into consecutive
  windows (the last padded with silence), each is processed, and the results are
  joined and trimmed back to the melody's length.
- Danceability is honoured per conditioning variant: `decoder` decodes with the
  requested c; `latent` sets the last latent dimension to c; `encoder` encodes
  again with c; `none` adds the attribute vector (`attributes.py`). A request a
  model cannot honour raises `GenerationError` naming what to do instead.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jax_musicvae import checkpoints, cpu_devices
from jax_musicvae.attributes import ATTRIBUTE_FILE, COMMAND, AttributeVector
from jax_musicvae.config import LossConfig, ModelConfig
from jax_musicvae.danceability_map import MAP_FILE, DanceabilityMap, Use
from jax_musicvae.data.meters import Grid, grid_named
from jax_musicvae.data.midi_io import parse_midi, song_tokens, write_midi
from jax_musicvae.data.representations import REPRESENTATIONS, Representation
from jax_musicvae.data.rhythm import (
    estimate_danceability,
    melody_danceability,
    onset_danceability,
)
from jax_musicvae.experiment import ExperimentConfig
from jax_musicvae.models import MusicVAE, init_params, note_on_flags
from jax_musicvae.statistics import gaussianise
from jax_musicvae.steps import eval_step

logger = logging.getLogger(__name__)

# Danceability used for a conditioned model when a request gives none (mid-scale).
DEFAULT_DANCEABILITY = 0.5
# Aimed requests (`TrainedModel.aim`): the attribute-dimension values tried per code, and
# the danceability error one unit of code moved away from the map's value is worth (so
# among values that reach a request equally well the nearest to the map's one wins).
AIM_GRID = np.linspace(-4.0, 4.0, 81)
AIM_SLACK = 0.01


class GenerationError(ValueError):
    """A request the model or the input cannot satisfy; the message names the problem."""


class CheckpointMismatchError(GenerationError):
    """The checkpoint's parameters or representation do not fit its (or the data's) config."""


@dataclasses.dataclass(frozen=True)
class Melody:
    """Tokens of one input melody and its source danceability (rhythm estimate)."""

    tokens: np.ndarray
    danceability: float
    name: str


@dataclasses.dataclass(frozen=True)
class Encoding:
    """Windows [W, T] of the encoded melodies, in order, and their codes [W, z_size].

    `melody[i]` is the input melody window i belongs to; `danceability[i]` is that
    melody's source danceability (what `reconstruct` decodes with).
    """

    windows: np.ndarray
    z: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    melody: np.ndarray
    danceability: np.ndarray
    lengths: tuple[int, ...]


def representation_for(config: ModelConfig) -> Representation:
    """The token representation a model reads, identified by its input depth."""
    for rep in REPRESENTATIONS.values():
        if rep.depth == config.input_depth:
            return rep
    depths = ", ".join(f"{r.name}={r.depth}" for r in REPRESENTATIONS.values())
    raise CheckpointMismatchError(
        f"model input_depth={config.input_depth} matches no representation ({depths})"
    )


def check_params(config: ModelConfig, params: Any, label: str) -> None:
    """Raise CheckpointMismatchError naming the parameters whose shapes differ from `config`."""
    expected = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))

    def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}

    want, have = shapes(expected), shapes(params)
    problems = [f"{k} missing" for k in sorted(set(want) - set(have))]
    problems += [f"{k} unexpected" for k in sorted(set(have) - set(want))]
    problems += [
        f"{k} has shape {have[k]}, config expects {want[k]}"
        for k in sorted(set(want) & set(have))
        if want[k] != have[k]
    ]
    if problems:
        more = f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""
        raise CheckpointMismatchError(
            f"{label}: parameters do not match the model config: {'; '.join(problems[:4])}{more}"
        )


def slerp(p0: np.ndarray, p1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between rows p0, p1 [N, D] at fractions t [S] -> [S, N, D].

    Falls back to linear interpolation where the two vectors are (anti)parallel or zero.
    """
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    t = np.asarray(t, np.float64)[:, None, None]
    n0 = np.linalg.norm(p0, axis=-1, keepdims=True)
    n1 = np.linalg.norm(p1, axis=-1, keepdims=True)
    cos = np.sum(p0 * p1, -1, keepdims=True) / np.maximum(n0 * n1, 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    so = np.sin(omega)
    safe = so > 1e-6
    so = np.where(safe, so, 1.0)
    spherical = (np.sin((1.0 - t) * omega) * p0 + np.sin(t * omega) * p1) / so
    linear = (1.0 - t) * p0 + t * p1
    return np.where(safe, spherical, linear).astype(np.float32)


def lerp(p0: np.ndarray, p1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation between rows p0, p1 [N, D] at fractions t [S] -> [S, N, D]."""
    t = np.asarray(t, np.float32)[:, None, None]
    return ((1.0 - t) * p0[None] + t * p1[None]).astype(np.float32)


def _bucket(size: int, limit: int) -> int:
    """Padded chunk size: the next power of two, at most `limit`."""
    return min(limit, 1 << (size - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last row so a chunk has `rows` rows (results of padding are dropped)."""
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), 0)]) if len(x) < rows else x


def row_keys(seed: jax.Array, rows: jax.Array, stream: int) -> jax.Array:
    """Keys [B] for rows [B]: fold_in(fold_in(PRNGKey(seed), row), stream), inside jit.

    One key per row index makes results independent of the chunking; `stream`
    separates the uses (0 decoding noise, 1 posterior eps, 2 prior z).
    """
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda row: jax.random.fold_in(jax.random.fold_in(base, row), stream))(rows)


def _is_single(inputs: Any) -> bool:
    """A path, MIDI bytes, a PrettyMIDI object or a 1-D token array is one melody."""
    if isinstance(inputs, str | Path | bytes) or hasattr(inputs, "instruments"):
        return True
    return isinstance(inputs, np.ndarray | jax.Array) and np.ndim(inputs) == 1


def _check_rounds(refine: int) -> None:
    """Refuse a negative number of decode-encode rounds before any work is done."""
    if refine < 0:
        raise GenerationError(f"refine={refine} must be >= 0")


def _edit_target(
    enc: Encoding, danceability: float | Sequence[float], strength: float
) -> np.ndarray:
    """Per window, s + strength * (requested - s) for the melody's source danceability s."""
    requested = _danceability_array(danceability, len(enc.lengths))[enc.melody]
    return (enc.danceability + strength * (requested - enc.danceability)).astype(np.float32)


def _danceability_array(value: float | Sequence[float] | np.ndarray, count: int) -> np.ndarray:
    """Per-row danceability [count] from a scalar or a sequence, checked to lie in [0, 1]."""
    array = np.broadcast_to(np.asarray(value, np.float32), (count,)).copy()
    if not np.all((array >= 0.0) & (array <= 1.0)):
        raise GenerationError(f"danceability must lie in [0, 1], got {value!r}")
    return array


class Compiled(NamedTuple):
    prior: Callable[..., Any]
    encode: Callable[..., Any]
    generate: Callable[..., Any]
    evaluate: Callable[..., Any]
    onsets: Callable[..., Any]


@functools.lru_cache(maxsize=16)
def compiled(config: ModelConfig, loss: LossConfig) -> Compiled:
    """Jitted functions of one architecture; randomness comes from (seed, row index).

    Cached per config, so models of the same architecture (the checkpoints of an
    analysis, repeated loads in one process) share their compiled code.
    """
    model = MusicVAE(config)
    size, shape = config.z_size, (config.sequence_length, config.input_depth)

    def normal(seed, rows, stream):
        keys = row_keys(seed, rows, stream)
        return jax.vmap(lambda k: jax.random.normal(k, (size,)))(keys)

    def prior(params, rows, seed):
        del params  # same signature as the others, for TrainedModel._chunked
        return normal(seed, rows, 2)

    def encode(params, tokens, condition, rows, seed):
        mu, sigma = model.apply({"params": params}, tokens, condition, method=MusicVAE.encode)
        return mu, sigma, mu + sigma * normal(seed, rows, 1)

    def generate(params, z, condition, rows, seed, temperature, greedy):
        gumbel = None
        if not greedy:
            keys = row_keys(seed, rows, 0)
            gumbel = jax.vmap(lambda k: jax.random.gumbel(k, shape))(keys)
        out = model.apply(
            {"params": params}, z, condition, temperature, gumbel, method=MusicVAE.generate
        )
        return out["tokens"]

    def evaluate(params, batch, rows, seed):
        return eval_step(params, batch, normal(seed, rows, 1), model=config, loss=loss)

    def onsets(params, z):
        """The rhythm decoder's note-on flags [B, T] of codes z (models that have one)."""
        logits = model.apply({"params": params}, z, method=lambda m, z: m.rhythm(z))
        return note_on_flags(logits)

    return Compiled(
        jax.jit(prior),
        jax.jit(encode),
        jax.jit(generate, static_argnames="greedy"),
        jax.jit(evaluate),
        jax.jit(onsets),
    )


class TrainedModel:
    """A model and its parameters, with the creative operations of the MusicVAE paper."""

    def __init__(
        self,
        experiment: ExperimentConfig,
        params: Any,
        *,
        batch_size: int = 64,
        attribute_vector: AttributeVector | None = None,
        danceability_map: DanceabilityMap | None = None,
        emphasis: float = 1.0,
        aim: bool | None = None,
        checkpoint_dir: Path | None = None,
        label: str = "model",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if emphasis <= 0:
            raise GenerationError(f"emphasis={emphasis} must be > 0")
        self.experiment = experiment
        self.config = experiment.model
        self.representation = representation_for(self.config)
        self.grid: Grid = grid_named(experiment.data.grid)
        if self.config.steps_per_bar != self.grid.steps_per_bar:
            raise CheckpointMismatchError(
                f"{label}: model has steps_per_bar={self.config.steps_per_bar}; its "
                f"{self.grid.name} grid has bars of {self.grid.steps_per_bar} steps"
            )
        check_params(self.config, params, label)
        self.params = params
        self.batch_size = batch_size
        self.checkpoint_dir = checkpoint_dir
        self.label = label
        self.attribute_vector = attribute_vector
        if attribute_vector is not None:
            self._check_attribute(attribute_vector)
        self.danceability_map = danceability_map
        self.emphasis = emphasis
        if aim and not self.can_aim:
            raise GenerationError(
                f"{label}: aimed requests need a rhythm decoder that reads the attribute "
                "dimension (model.rhythm_hidden > 0, loss.attribute_loss set)"
            )
        self.aim = self.can_aim if aim is None else aim
        self._fns = compiled(self.config, experiment.loss)
        self._replicas: dict[tuple[int, ...], tuple[jax.sharding.Sharding, Any]] = {}

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        step: int | None = None,
        best: bool = False,
        batch_size: int = 64,
        attribute_vector: str | Path | None = None,
        emphasis: float = 1.0,
        aim: bool | None = None,
    ) -> TrainedModel:
        """Load a workdir, its checkpoints/ folder or one step folder (latest step by default).

        The attribute vector is read from `attribute_vector` if given, else from the
        step folder when `musicvae attribute-vector` has stored one there; the
        danceability map from the step folder when `musicvae danceability-map` has
        stored one there.
        """
        directory, named = checkpoints.resolve(Path(path))
        manager = checkpoints.make_manager(directory, read_only=True, async_saves=False)
        try:
            chosen = checkpoints.choose_step(manager, named if step is None else step, best)
        finally:
            manager.close()
        step_dir = Path(directory) / str(chosen)
        config, params = checkpoints.load_params(step_dir)
        experiment = ExperimentConfig.from_dict(config)
        vector_path = Path(attribute_vector) if attribute_vector else step_dir / ATTRIBUTE_FILE
        vector = AttributeVector.load(vector_path) if vector_path.is_file() else None
        if vector is None and attribute_vector:
            raise GenerationError(f"{attribute_vector}: no such attribute vector file")
        map_path = step_dir / MAP_FILE
        return cls(
            experiment,
            params,
            batch_size=batch_size,
            attribute_vector=vector,
            danceability_map=DanceabilityMap.load(map_path) if map_path.is_file() else None,
            emphasis=emphasis,
            aim=aim,
            checkpoint_dir=step_dir,
            label=str(path),
        )

    def _check_attribute(self, vector: AttributeVector) -> None:
        if self.config.conditioning != "none":
            raise GenerationError(
                f"attribute vectors are for conditioning 'none'; this model has "
                f"{self.config.conditioning!r}"
            )
        if vector.vector.shape != (self.config.z_size,):
            raise CheckpointMismatchError(
                f"attribute vector has {vector.vector.shape[0]} dimensions, the model's latent "
                f"has {self.config.z_size}; recompute it with `{COMMAND}`"
            )

    @property
    def attribute_dimension(self) -> int | None:
        """The latent dimension trained to carry danceability (attribute loss), if any."""
        loss = self.experiment.loss
        if loss.attribute_loss == "none" or not loss.attribute_quantiles:
            return None
        return loss.attribute_dimension

    @property
    def controllable(self) -> bool:
        """Whether sample/decode/edit can take a danceability request."""
        conditioning = self.config.conditioning
        if conditioning in ("decoder", "latent") or self.attribute_dimension is not None:
            return True
        return conditioning == "none" and self.attribute_vector is not None

    @property
    def can_aim(self) -> bool:
        """Whether the model has a rhythm decoder reading its attribute dimension."""
        dimension = self.attribute_dimension
        return (
            bool(self.config.rhythm_hidden)
            and dimension is not None
            and dimension < self.config.rhythm_code_size
        )

    def attribute_code(self, danceability: np.ndarray, use: Use = "edit") -> np.ndarray:
        """The value of the attribute dimension for a request of `danceability` [N]: from
        the danceability map fitted for `use` (with `self.emphasis`) when the model has
        one, else the Gaussianised request Phi^-1(F(c)) the attribute loss trained on."""
        if self.danceability_map is not None:
            return self.danceability_map.code(danceability, use, self.emphasis)
        return gaussianise(self._emphasised(danceability), self.experiment.loss.attribute_quantiles)

    def _emphasised(self, danceability: np.ndarray) -> np.ndarray:
        """m + emphasis (c - m), m the training median (the map's, or the attribute
        quantiles' middle one)."""
        if self.danceability_map is not None:
            centre = self.danceability_map.centre
        else:
            quantiles = self.experiment.loss.attribute_quantiles
            centre = quantiles[len(quantiles) // 2]
        return centre + self.emphasis * (np.asarray(danceability) - centre)

    def _set_attribute(self, z: np.ndarray, danceability: np.ndarray, use: Use = "edit") -> None:
        """Set z's attribute dimension (in place) for the requests `danceability` [N].

        With `aim`, each code gets the value at which its own rhythm decoder's note-ons
        have the requested rhythm estimate (emphasised like the map's requests): a
        latent constraint with the model's rhythm decoder as the critic. The map's
        value answers the average code; the other rhythm dimensions of a code (an
        edited melody's own rhythm) move where its note-ons change.
        """
        dimension = self.attribute_dimension
        z[:, dimension] = self.attribute_code(danceability, use)
        if not self.aim:
            return
        rows, values = len(z), len(AIM_GRID)
        candidates = np.repeat(z, values, axis=0)
        candidates[:, dimension] = np.tile(AIM_GRID, rows)
        flags = self._chunked(self._fns.onsets, len(candidates), candidates)
        reached = onset_danceability(flags, self.grid).reshape(rows, values)
        target = np.clip(self._emphasised(danceability), 0.0, 1.0)
        cost = np.abs(reached - target[:, None]) + AIM_SLACK * np.abs(
            AIM_GRID[None, :] - z[:, dimension, None]
        )
        z[:, dimension] = AIM_GRID[np.argmin(cost, axis=1)]

    def set_attribute_vector(self, vector: AttributeVector) -> None:
        self._check_attribute(vector)
        self.attribute_vector = vector

    # ---------------------------------------------------------------- batching

    def _chunked(
        self,
        fn: Callable[..., Any],
        count: int,
        *arrays: Any,
        split: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run fn over rows in padded chunks of at most batch_size; concatenate the results.

        `arrays` are cut into rows; `kwargs` are passed whole to every call. Chunks of
        `split` work ("decode", "encode") may be split over CPU devices (`cpu_devices`).
        """
        if count == 0:
            raise GenerationError("nothing to process (no melodies or n=0)")
        outputs = []
        for start in range(0, count, self.batch_size):
            size = min(self.batch_size, count - start)
            rows = _bucket(size, self.batch_size)
            parts = [
                None if a is None else _pad_rows(np.asarray(a)[start : start + size], rows)
                for a in arrays
            ]
            params = self.params
            devices = cpu_devices.split_devices(self.config, rows, split) if split else []
            if len(devices) > 1:
                by_rows, params = self._split_over(devices)
                parts = [None if a is None else jax.device_put(a, by_rows) for a in parts]
            result = fn(params, *parts, **kwargs)
            outputs.append(jax.tree.map(lambda x, n=size: np.asarray(x)[:n], result))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)

    def _split_over(self, devices: list[jax.Device]) -> tuple[jax.sharding.Sharding, Any]:
        """(rows split over `devices`, the parameters replicated on them; kept per set)."""
        key = tuple(d.id for d in devices)
        if key not in self._replicas:
            by_rows, replicated = cpu_devices.row_shardings(devices)
            self._replicas[key] = by_rows, jax.device_put(self.params, replicated)
            logger.info("%s: rows split over %d CPU devices", self.label, len(devices))
        return self._replicas[key]

    # ------------------------------------------------------------------ inputs

    def melody(self, source: Any, name: str | None = None) -> Melody:
        """One input as tokens: a MIDI path, MIDI bytes, a PrettyMIDI object or a 1-D token array.

        MIDI: the busiest instrument, from the bar of its first note to the bar of its
        last; its source danceability is the rhythm estimate of the whole file.
        `name` labels bytes in messages (default `<bytes>`).
        """
        rep = self.representation
        if isinstance(source, str | Path | bytes) or hasattr(source, "instruments"):
            if isinstance(source, bytes):
                name = name or "<bytes>"
                parsed = parse_midi(source, name=name, grid=self.grid)
            elif isinstance(source, str | Path):
                name, parsed = Path(source).name, parse_midi(source, grid=self.grid)
            else:
                buffer = io.BytesIO()
                source.write(buffer)
                name = "<pretty_midi>"
                parsed = parse_midi(buffer.getvalue(), name=name, grid=self.grid)
            tokens = rep.canonical(song_tokens(parsed, rep)[None])[0].astype(np.int32)
            bar = self.grid.steps_per_bar
            bars = np.flatnonzero(rep.sounding(tokens).reshape(-1, bar).any(-1))
            if not len(bars):
                raise GenerationError(
                    f"{name}: no usable melody (no notes in the pitch range of {rep.name})"
                )
            tokens = tokens[bars[0] * bar : (bars[-1] + 1) * bar]
            return Melody(tokens, estimate_danceability(parsed.rhythm()), name)
        tokens = np.asarray(source)
        if tokens.ndim != 1 or not len(tokens) or not np.issubdtype(tokens.dtype, np.integer):
            raise GenerationError(
                f"a token melody must be a non-empty 1-D integer array, got {tokens.dtype} "
                f"with shape {tokens.shape}"
            )
        if tokens.min() < 0 or tokens.max() >= rep.depth:
            raise GenerationError(
                f"tokens must lie in [0, {rep.depth}) for {rep.name}, found "
                f"[{tokens.min()}, {tokens.max()}]"
            )
        tokens = tokens.astype(np.int32)
        return Melody(tokens, self.danceability_of(tokens), "<tokens>")

    def danceability_of(self, tokens: np.ndarray, tempo_bpm: float = 120.0) -> float:
        """The rhythm estimate of one token melody on this model's grid."""
        return melody_danceability(tokens, self.representation, tempo_bpm, self.grid)

    def write_midi(self, tokens: np.ndarray, path: str | Path, tempo_bpm: float = 120.0) -> Path:
        """One token melody as a MIDI file in the time signature of this model's grid."""
        return write_midi(
            tokens,
            self.representation,
            path,
            tempo_bpm=tempo_bpm,
            time_signature=self.grid.time_signature,
        )

    def melodies(self, inputs: Any) -> list[Melody]:
        """A list of melodies from one input or a sequence (a 2-D array is one per row)."""
        items = [inputs] if _is_single(inputs) else list(inputs)
        if not items:
            raise GenerationError("no melodies given")
        return [self.melody(item) for item in items]

    def _windows(self, melodies: list[Melody]) -> tuple[np.ndarray, np.ndarray]:
        """Consecutive windows [W, T] of all melodies (last ones padded) and melody index [W]."""
        length, pad = self.config.sequence_length, self.representation.pad_token
        windows, owner = [], []
        for i, m in enumerate(melodies):
            count = -(-len(m.tokens) // length)
            padded = np.full(count * length, pad, np.int32)
            padded[: len(m.tokens)] = m.tokens
            windows.append(padded.reshape(count, length))
            owner += [i] * count
        return np.concatenate(windows), np.asarray(owner)

    def _join(self, tokens: np.ndarray, owner: np.ndarray, lengths: Sequence[int]) -> list:
        """Per melody, its decoded windows laid end to end and trimmed to its length."""
        return [tokens[owner == i].reshape(-1)[:n] for i, n in enumerate(lengths)]

    # --------------------------------------------------------------- operations

    def _encode_tokens(
        self, windows: np.ndarray, condition: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cond = condition if self.config.uses_condition else None
        rows = np.arange(len(windows), dtype=np.int32)
        return self._chunked(
            self._fns.encode, len(windows), windows, cond, rows, seed=seed, split="encode"
        )

    def encode(
        self,
        melodies: Any,
        danceability: float | Sequence[float] | None = None,
        seed: int = 0,
    ) -> Encoding:
        """z = mu + sigma * eps (eps from `seed`), mu and sigma of every window [W, z_size].

        `danceability` (per melody) overrides the source estimate that the `encoder`
        and `latent` variants read.
        """
        items = self.melodies(melodies)
        source = np.array([m.danceability for m in items], np.float32)
        if danceability is not None:
            source = _danceability_array(danceability, len(items))
        windows, owner = self._windows(items)
        mu, sigma, z = self._encode_tokens(windows, source[owner], seed)
        return Encoding(
            windows, z, mu, sigma, owner, source[owner], tuple(len(m.tokens) for m in items)
        )

    def _decode(
        self, z: np.ndarray, condition: np.ndarray | None, temperature: float, seed: int
    ) -> np.ndarray:
        if temperature < 0:
            raise GenerationError(f"temperature={temperature} must be >= 0 (0: greedy)")
        # The model checks that every conditioned variant gets c; only `decoder` reads it here.
        cond = None
        if self.config.conditioning == "decoder":
            cond = condition
        elif self.config.uses_condition:
            cond = np.zeros(len(z), np.float32)
        return self._chunked(
            self._fns.generate,
            len(z),
            np.asarray(z, np.float32),
            cond,
            np.arange(len(z), dtype=np.int32),
            seed=seed,
            temperature=np.float32(max(temperature, 1e-6)),
            greedy=temperature == 0,
            split="decode",
        )

    def _cannot_request(self, operation: str) -> GenerationError:
        if self.config.conditioning == "encoder":
            return GenerationError(
                f"{operation}: a model with conditioning 'encoder' reads danceability only "
                "when encoding; use edit() (`musicvae edit`) to change a melody's danceability"
            )
        return GenerationError(
            f"{operation}: a model with conditioning 'none' needs an attribute vector for "
            f"danceability requests; compute it with `{COMMAND}`"
        )

    def decode(
        self,
        z: np.ndarray,
        danceability: float | Sequence[float] | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        refine: int = 0,
    ) -> np.ndarray:
        """Tokens [N, T] from codes z [N, z_size].

        `decoder`: decoded with c = danceability (default 0.5); `latent`: c replaces
        z's last dimension when given; `encoder` and `none` cannot take a request here.
        `refine` decode-encode rounds (`_refine`) keep the dimensions that carry
        danceability (the attribute dimension, `latent`'s c) as z has them.
        """
        _check_rounds(refine)
        z = np.array(z, np.float32, ndmin=2)
        if z.shape[1:] != (self.config.z_size,):
            raise GenerationError(f"z has shape {z.shape}, expected [N, {self.config.z_size}]")
        conditioning = self.config.conditioning
        regularised = self.attribute_dimension is not None
        if danceability is not None and conditioning in ("encoder", "none") and not regularised:
            raise self._cannot_request("decode")
        condition = None
        if danceability is not None and regularised:
            values = _danceability_array(danceability, len(z))
            self._set_attribute(z, values)
        if conditioning == "decoder":
            value = DEFAULT_DANCEABILITY if danceability is None else danceability
            condition = _danceability_array(value, len(z))
        elif conditioning == "latent" and danceability is not None:
            z[:, -1] = _danceability_array(danceability, len(z))
        tokens = self._decode(z, condition, temperature, seed)
        if not refine:
            return tokens
        source = _danceability_array(
            DEFAULT_DANCEABILITY if danceability is None else danceability, len(z)
        )
        fixed = self._fixed_dimensions(True)
        aim_as = None if danceability is None else "edit"
        return self._refine(
            tokens, z, fixed, source, condition, temperature, seed, refine, aim_as=aim_as
        )

    def prior(
        self, n: int, danceability: float | Sequence[float] | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes z [n, z_size] from N(0, I) set up for `danceability`, and the decoder's c.

        `latent`: the last dimension is c; `none`: the attribute vector moves z from
        the vector's midpoint danceability to the request.
        """
        if n < 1:
            raise GenerationError(f"n={n} must be >= 1")
        conditioning = self.config.conditioning
        if danceability is not None and not self.controllable:
            raise self._cannot_request("sample")
        z = self._chunked(self._fns.prior, n, np.arange(n, dtype=np.int32), seed=seed)
        value = DEFAULT_DANCEABILITY if danceability is None else danceability
        c = _danceability_array(value, n)
        if conditioning == "latent":
            z[:, -1] = c
        if self.attribute_dimension is not None:
            if danceability is not None:
                self._set_attribute(z, c, "sample")
        elif conditioning == "none" and danceability is not None:
            z = z + self.attribute_vector.shift(np.full(n, self.attribute_vector.midpoint), c)
        return z.astype(np.float32), c if conditioning == "decoder" else None

    def _fixed_dimensions(self, requested: bool) -> list[int]:
        """The dimensions of z that a danceability request sets (kept through refinement)."""
        fixed = []
        if requested and self.attribute_dimension is not None:
            fixed.append(self.attribute_dimension)
        if self.config.conditioning == "latent":
            fixed.append(self.config.z_size - 1)
        return fixed

    def _refine(
        self,
        tokens: np.ndarray,
        z: np.ndarray,
        fixed: list[int],
        source: np.ndarray,
        condition: np.ndarray | None,
        temperature: float,
        seed: int,
        rounds: int,
        aim_as: Use | None = None,
    ) -> np.ndarray:
        """Decode-encode refinement: `rounds` times, decode the mu of the decoded windows.

        The decoder is reliable near the codes of real melodies and less so between
        them; the mu of a decoded window lies where the encoder puts melodies, so
        decoding it again gives a more melody-like result (docs/reconstruction.md).
        The dimensions in `fixed` (a danceability request) keep their values in z;
        `source` is the c the `encoder` and `latent` variants encode with. With
        `aim_as` (the request `source` made for that use) an aiming model aims the
        attribute dimension again for each new code instead.
        """
        for round_ in range(1, rounds + 1):
            mu = self._encode_tokens(tokens, source, seed)[0]
            mu[:, fixed] = z[:, fixed]
            if self.aim and aim_as is not None:
                self._set_attribute(mu, source, aim_as)
            tokens = self._decode(mu, condition, temperature, seed + round_)
        return tokens

    def sample(
        self,
        n: int,
        danceability: float | Sequence[float] | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        refine: int = 1,
    ) -> np.ndarray:
        """n new melodies [n, T] from the prior, with the requested danceability if any.

        `refine` decode-encode rounds (`_refine`) follow the first decoding; 0 gives
        the plain decoding of the prior codes.
        """
        _check_rounds(refine)
        z, condition = self.prior(n, danceability, seed)
        tokens = self._decode(z, condition, temperature, seed)
        value = DEFAULT_DANCEABILITY if danceability is None else danceability
        source = _danceability_array(value, n)
        fixed = self._fixed_dimensions(danceability is not None)
        aim_as = None if danceability is None else "sample"
        return self._refine(
            tokens, z, fixed, source, condition, temperature, seed, refine, aim_as=aim_as
        )

    def reconstruct(self, melodies: Any, temperature: float = 0.0, seed: int = 0) -> Any:
        """Decode the mu of every window with the melody's own danceability; join windows.

        Returns one array for one melody, else a list (same order, same lengths).
        """
        enc = self.encode(melodies, seed=seed)
        tokens = self._decode(enc.mu, enc.danceability, temperature, seed)
        joined = self._join(tokens, enc.melody, enc.lengths)
        return joined[0] if _is_single(melodies) else joined

    def interpolation_codes(
        self, a: Any, b: Any, steps: int, danceability: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Codes [steps, W, z_size] on the slerp from mu(a) to mu(b), ends included.

        Windows are paired (the longer melody is cut to the shorter's windows); for
        `latent` the appended c is interpolated linearly, not spherically. Also
        returns the decoder's c [steps, W] (linear between the two melodies) and the
        common length in steps. With `danceability`, every step is held at that value.
        """
        if danceability is not None and not self.controllable:
            raise self._cannot_request("interpolate")
        if steps < 2:
            raise GenerationError(f"steps={steps} must be >= 2 (both ends are included)")
        enc = self.encode([a, b])
        first, second = enc.melody == 0, enc.melody == 1
        count = min(first.sum(), second.sum())
        if first.sum() != second.sum():
            logger.warning(
                "melodies have %d and %d windows; interpolating the first %d",
                first.sum(),
                second.sum(),
                count,
            )
        mu_a, mu_b = enc.mu[first][:count], enc.mu[second][:count]
        t = np.linspace(0.0, 1.0, steps)
        dims = self.config.head_size
        codes = np.concatenate(
            [
                slerp(mu_a[:, :dims], mu_b[:, :dims], t),
                lerp(mu_a[:, dims:], mu_b[:, dims:], t),
            ],
            axis=-1,
        )
        c_a, c_b = enc.danceability[first][0], enc.danceability[second][0]
        condition = np.repeat(((1 - t) * c_a + t * c_b)[:, None], count, 1).astype(np.float32)
        if danceability is not None:
            condition[:] = danceability
            if self.attribute_dimension is not None:
                flat = codes.reshape(-1, codes.shape[-1])
                self._set_attribute(flat, condition.ravel())
                codes = flat.reshape(codes.shape)
            elif self.config.conditioning == "latent":
                codes[..., -1] = condition
            elif self.config.conditioning == "none":
                midpoint = np.full(condition.size, self.attribute_vector.midpoint)
                shift = self.attribute_vector.shift(midpoint, condition.ravel())
                codes = codes + shift.reshape(codes.shape)
        length = min(min(enc.lengths), int(count) * self.config.sequence_length)
        return codes, condition, length

    def interpolate(
        self,
        a: Any,
        b: Any,
        steps: int = 5,
        temperature: float = 0.0,
        seed: int = 0,
        danceability: float | None = None,
    ) -> np.ndarray:
        """`steps` melodies [steps, L] morphing from a to b (the ends reconstruct a and b).

        With `danceability`, the whole morph is held at that danceability.
        """
        codes, condition, length = self.interpolation_codes(a, b, steps, danceability)
        count = codes.shape[1]
        tokens = self._decode(
            codes.reshape(-1, codes.shape[-1]), condition.reshape(-1), temperature, seed
        )
        return tokens.reshape(steps, count * self.config.sequence_length)[:, :length]

    def edit_codes(
        self,
        melodies: Any,
        danceability: float | Sequence[float],
        strength: float = 1.0,
    ) -> tuple[Encoding, np.ndarray, np.ndarray | None]:
        """(encoding, edited codes z [W, z_size], decoder c [W] or None) of an edit.

        The target is t = s + strength * (danceability - s) for source danceability s:
        `decoder` decodes mu with c = t, `latent` puts t in z's last dimension,
        `encoder` encodes again with t, `none` adds (t - s) / delta * attribute vector;
        a model trained with the attribute loss sets its attribute dimension to the code of t.
        """
        enc = self._encode_for_edit(melodies)
        z, condition = self._edited_codes(enc, danceability, strength)
        return enc, z, condition

    def _encode_for_edit(self, melodies: Any) -> Encoding:
        if self.config.conditioning == "none" and not self.controllable:
            raise self._cannot_request("edit")
        return self.encode(melodies)

    def _edited_codes(
        self, enc: Encoding, danceability: float | Sequence[float], strength: float
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`edit_codes` of an encoding already made."""
        conditioning = self.config.conditioning
        target = _edit_target(enc, danceability, strength)
        z, condition = enc.mu.copy(), None
        if self.attribute_dimension is not None:
            self._set_attribute(z, target)
        if conditioning == "decoder":
            condition = target
        elif conditioning == "latent":
            z[:, -1] = target
        elif conditioning == "encoder":
            z = self._encode_tokens(enc.windows, target, 0)[0]
        elif self.attribute_dimension is None:
            z = z + self.attribute_vector.shift(enc.danceability, target)
        return z.astype(np.float32), condition

    def edit(
        self,
        melodies: Any,
        danceability: float | Sequence[float],
        strength: float = 1.0,
        temperature: float = 0.0,
        seed: int = 0,
        refine: int = 1,
        keep_source: bool = True,
    ) -> Any:
        """The melody (or melodies) re-decoded with the requested danceability, same length.

        `refine` decode-encode rounds (`_refine`) move the result further toward the
        request and away from the source melody. `keep_source` keeps the source's
        token at every step where the edit decodes the same token as the same edit
        asked for the source's own danceability: the result is the source with the
        changes the request makes, not with the model's reconstruction errors. The
        defaults (one round, kept source) followed requests best and kept the most
        tokens in docs/danceability-control.md; `refine=0, keep_source=False` is the
        plain decoding of the edited code.
        """
        _check_rounds(refine)
        enc = self._encode_for_edit(melodies)

        def decoded(strength: float) -> np.ndarray:
            z, condition = self._edited_codes(enc, danceability, strength)
            tokens = self._decode(z, condition, temperature, seed)
            if refine:
                target = _edit_target(enc, danceability, strength)
                fixed = self._fixed_dimensions(True)
                tokens = self._refine(
                    tokens, z, fixed, target, condition, temperature, seed, refine, aim_as="edit"
                )
            return tokens

        tokens = decoded(strength)
        if keep_source:
            tokens = np.where(tokens == decoded(0.0), enc.windows, tokens)
        joined = self._join(tokens, enc.melody, enc.lengths)
        return joined[0] if _is_single(melodies) else joined

    # ---------------------------------------------------------------- analysis

    def evaluate(
        self, windows: np.ndarray, danceability: np.ndarray, seed: int = 0
    ) -> dict[str, float]:
        """Held-out ELBO, KL bits, teacher-forced and free-running accuracy of windows [N, T].

        Means over windows; chunks are not padded here (padding would bias the means).
        """
        windows = np.asarray(windows, np.int32)
        totals: dict[str, float] = {}
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            batch = {"tokens": chunk}
            values = np.asarray(danceability[start : start + len(chunk)], np.float32)
            if self.config.uses_condition:
                batch["condition"] = values
            if self.attribute_dimension is not None:
                batch["attribute"] = gaussianise(values, self.experiment.loss.attribute_quantiles)
            rows = np.arange(start, start + len(chunk), dtype=np.int32)
            metrics = self._fns.evaluate(self.params, batch, rows, seed)
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
        return {name: value / len(windows) for name, value in totals.items()}
