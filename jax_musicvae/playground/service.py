"""What the playground does, independent of HTTP: `TrainedModel` calls on JSON-ready values.

Melodies travel as token lists (the model's representation); every answer carries
the melody's notes (for the piano roll and the synth), its measured danceability
(the `rhythm` estimate of its tokens) and, for generated results, the seed and the
`musicvae` command that reproduces it. One model serves every request: calls into
it are serialised by a lock, so concurrent requests are safe and each sees the
same compiled functions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from jax_musicvae.data.midi_io import MidiError, tokens_to_score
from jax_musicvae.data.representations import Notes
from jax_musicvae.data.rhythm import melody_rhythm, rhythm_features
from jax_musicvae.data.source import SPLITS, WindowSource, load_songs
from jax_musicvae.generate import GenerationError, TrainedModel

logger = logging.getLogger(__name__)

# Limits of one request; the page's controls use the same ones (GET /api/info).
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_SAMPLES = 16
MAX_STEPS = 16  # interpolation melodies, both ends included
MAX_TEMPERATURE = 3.0
MAX_SEED = 2**31 - 1
MAX_WINDOWS = 8  # windows per melody (an upload is cut to this many)
MAX_CODES = 64  # rows of one decode request
TEMPO_RANGE = (40.0, 300.0)
TEMPO = 120.0  # of the page's playback, the downloads and the danceability estimate
# Row buckets compiled before the server says it is ready (generate.py pads to these).
WARM_BUCKETS = (1, 2, 4, 8, 16)


class PlaygroundError(ValueError):
    """A request the playground cannot serve; the message says why (HTTP 400)."""


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """A dataset split the page can pick melodies from."""

    source: WindowSource
    song_names: list[str]


def safe_name(text: str, default: str = "melody") -> str:
    """A file or label name without paths or odd characters (at most 60 characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name).strip("._")[:60]
    return stem or default


class Playground:
    """A loaded model plus the playground's operations, limits and reproduction commands."""

    def __init__(
        self,
        model: TrainedModel,
        *,
        checkpoint: str | None = None,
        attribute_vector: str | None = None,
        data: str | Path | None = None,
        split: str = "validation",
    ) -> None:
        self.model = model
        self.rep = model.representation
        self.grid = model.grid
        self.window = model.config.sequence_length
        self._lock = threading.Lock()
        # The step folder: the CLI commands shown on the page name exactly this checkpoint.
        self.checkpoint = checkpoint or str(model.checkpoint_dir or model.label)
        self.attribute_vector = attribute_vector
        self.held_out = self._open_held_out(data, split) if data else None

    def _open_held_out(self, data: str | Path, split: str) -> HeldOut:
        if split not in SPLITS:
            raise PlaygroundError(f"split {split!r} must be one of {', '.join(SPLITS)}")
        source = WindowSource(data, split)
        manifest = source.manifest
        if manifest["depth"] != self.rep.depth or manifest["sequence_length"] != self.window:
            raise PlaygroundError(
                f"{data}: windows of {manifest['sequence_length']} {manifest['representation']} "
                f"steps do not fit the model ({self.window} {self.rep.name} steps)"
            )
        if not len(source):
            raise PlaygroundError(f"{data}: the {split} split has no windows")
        names = [
            song.get("title") or song.get("song_id") or Path(str(song.get("path", ""))).stem
            for song in load_songs(data)
        ]
        return HeldOut(source, names)

    # ------------------------------------------------------------ values in/out

    def tokens(self, values: list[int], what: str = "tokens") -> np.ndarray:
        """A checked token melody: integers of the representation, at most MAX_WINDOWS windows."""
        tokens = np.asarray(values)
        if tokens.ndim != 1 or not len(tokens):
            raise PlaygroundError(f"{what}: a melody needs at least one token")
        if len(tokens) > MAX_WINDOWS * self.window:
            raise PlaygroundError(
                f"{what}: {len(tokens)} steps; the playground takes at most "
                f"{MAX_WINDOWS * self.window} ({MAX_WINDOWS} windows of {self.window})"
            )
        if tokens.min() < 0 or tokens.max() >= self.rep.depth:
            raise PlaygroundError(
                f"{what}: tokens must lie in [0, {self.rep.depth}) for {self.rep.name}"
            )
        return tokens.astype(np.int32)

    def melody(self, tokens: np.ndarray, name: str = "melody") -> dict[str, Any]:
        """A melody as the page draws and plays it: tokens, notes [onset, end, pitch], measure."""
        tokens = np.asarray(tokens, np.int32)
        notes = self.rep.decode(tokens)
        return {
            "name": name,
            "tokens": tokens.tolist(),
            "steps": len(tokens),
            "notes": np.stack([notes.onsets, notes.ends, notes.pitches], 1).astype(int).tolist(),
            "danceability": round(self.model.danceability_of(tokens, TEMPO), 4),
        }

    def _command(self, name: str, *args: str, **options: Any) -> str:
        parts = ["musicvae", name, *args, "--checkpoint", self.checkpoint]
        if self.attribute_vector:
            parts += ["--attribute-vector", self.attribute_vector]
        for key, value in options.items():
            if value is not None:
                parts += [
                    f"--{key.replace('_', '-')}",
                    f"{value:g}" if isinstance(value, float) else str(value),
                ]
        return " ".join(parts)

    def _run(self, fn, *args: Any, **kwargs: Any) -> Any:
        """One model call under the lock; a request the model refuses becomes a 400."""
        with self._lock:
            try:
                return fn(*args, **kwargs)
            except GenerationError as error:
                raise PlaygroundError(str(error)) from None

    # -------------------------------------------------------------- operations

    def info(self) -> dict[str, Any]:
        model = self.model
        config = model.config
        return {
            "checkpoint": self.checkpoint,
            "model": {
                "name": model.experiment.name,
                "cell": config.cell,
                "conditioning": config.conditioning,
                "latent_size": config.z_size,
                "bars": config.num_bars,
                "representation": self.rep.name,
            },
            "controllable": model.controllable,
            # An `encoder` model takes a danceability only when encoding: edits, no samples.
            "editable": model.controllable or config.conditioning == "encoder",
            "steps_per_bar": self.grid.steps_per_bar,
            "steps_per_beat": self.grid.steps_per_beat,
            "time_signature": list(self.grid.time_signature),
            "window_steps": self.window,
            "tempo_bpm": TEMPO,
            "held_out": None
            if self.held_out is None
            else {"split": self.held_out.source.split, "windows": len(self.held_out.source)},
            "limits": {
                "upload_bytes": MAX_UPLOAD_BYTES,
                "samples": MAX_SAMPLES,
                "interpolation_steps": MAX_STEPS,
                "temperature": MAX_TEMPERATURE,
                "seed": MAX_SEED,
                "windows": MAX_WINDOWS,
            },
        }

    def sample(
        self, count: int, temperature: float, seed: int, danceability: float | None
    ) -> dict[str, Any]:
        tokens = self._run(self.model.sample, count, danceability, temperature, seed)
        return {
            "melodies": [self.melody(t, f"sample_{seed}_{i}") for i, t in enumerate(tokens)],
            "seed": seed,
            "command": self._command(
                "sample", num=count, temperature=temperature, seed=seed, danceability=danceability
            ),
        }

    def encode(self, tokens: np.ndarray, seed: int) -> dict[str, Any]:
        enc = self._run(self.model.encode, tokens, seed=seed)
        return {
            "windows": len(enc.mu),
            "mu": enc.mu.tolist(),
            "sigma": enc.sigma.tolist(),
            "z": enc.z.tolist(),
            "danceability": float(enc.danceability[0]),
            "seed": seed,
        }

    def decode(
        self, z: list[list[float]], temperature: float, seed: int, danceability: float | None
    ) -> dict[str, Any]:
        codes = np.asarray(z, np.float32)
        size = self.model.config.z_size
        if codes.ndim != 2 or codes.shape[1] != size or not 1 <= len(codes) <= MAX_CODES:
            raise PlaygroundError(f"z: give 1 to {MAX_CODES} codes of {size} numbers each")
        if not np.isfinite(codes).all():
            raise PlaygroundError("z: codes must be finite numbers")
        tokens = self._run(self.model.decode, codes, danceability, temperature, seed)
        return {
            "melodies": [self.melody(t, f"decoded_{seed}_{i}") for i, t in enumerate(tokens)],
            "seed": seed,
        }

    def reconstruct(self, tokens: np.ndarray, temperature: float, seed: int) -> dict[str, Any]:
        result = self._run(self.model.reconstruct, tokens, temperature, seed)
        return {
            "melody": self.melody(result, "reconstruction"),
            "accuracy": round(float(np.mean(result == tokens)), 4),
            "seed": seed,
        }

    def edit(
        self,
        tokens: np.ndarray,
        danceability: float,
        strength: float,
        temperature: float,
        seed: int,
        name: str = "melody",
    ) -> dict[str, Any]:
        edited = self._run(self.model.edit, tokens, danceability, strength, temperature, seed)
        stem = safe_name(name)
        return {
            "source": self.melody(tokens, stem),
            "edited": self.melody(edited, f"{stem}_danceability_{danceability:.2f}"),
            "requested": danceability,
            "kept": round(float(np.mean(edited == tokens)), 4),
            "seed": seed,
            "command": self._command(
                "edit",
                f"{stem}.mid",
                danceability=danceability,
                strength=strength,
                temperature=temperature,
                seed=seed,
            ),
        }

    def interpolate(
        self,
        start: np.ndarray,
        end: np.ndarray,
        steps: int,
        temperature: float,
        seed: int,
        danceability: float | None,
    ) -> dict[str, Any]:
        tokens = self._run(
            self.model.interpolate, start, end, steps, temperature, seed, danceability
        )
        return {
            "melodies": [self.melody(t, f"interpolate_{i:02d}") for i, t in enumerate(tokens)],
            "seed": seed,
            "command": self._command(
                "interpolate",
                "start.mid",
                "end.mid",
                steps=steps,
                temperature=temperature,
                seed=seed,
                danceability=danceability,
            ),
        }

    def analyse(self, tokens: np.ndarray) -> dict[str, Any]:
        """The melody's danceability estimate, the rhythm features behind it, and its shape."""
        notes = self.rep.decode(tokens)
        features = rhythm_features(melody_rhythm(tokens, self.rep, TEMPO, self.grid))
        return {
            "melody": self.melody(tokens),
            "bars": math.ceil(len(tokens) / self.grid.steps_per_bar),
            "notes": len(notes.onsets),
            "pitch_range": [int(notes.pitches.min()), int(notes.pitches.max())]
            if len(notes.onsets)
            else None,
            "features": {k: round(float(v), 4) for k, v in features.items()},
        }

    def upload(self, data: bytes, name: str) -> dict[str, Any]:
        """A melody from MIDI bytes (the project's safe reader); long ones are cut."""
        label = safe_name(name, "upload.mid")
        if len(data) > MAX_UPLOAD_BYTES:
            raise PlaygroundError(f"{label}: {len(data)} bytes; uploads are limited to 2 MB")
        try:
            melody = self._run(self.model.melody, data, label)
        except MidiError as error:
            raise PlaygroundError(str(error)) from None
        tokens, note = melody.tokens, None
        limit = MAX_WINDOWS * self.window
        if len(tokens) > limit:
            note = (
                f"{label}: {len(tokens) // self.grid.steps_per_bar} bars; kept the first "
                f"{limit // self.grid.steps_per_bar}"
            )
            tokens = tokens[:limit]
        return {"melody": self.melody(tokens, Path(label).stem), "note": note}

    def held_out_window(self, index: int) -> dict[str, Any]:
        if self.held_out is None:
            raise PlaygroundError("no dataset: start the server with --data DIR to pick melodies")
        source = self.held_out.source
        if not 0 <= index < len(source):
            raise PlaygroundError(f"index {index} out of range: the split has {len(source)}")
        song = int(source.song[index])
        names = self.held_out.song_names
        title = names[song] if song < len(names) and names[song] else f"song {song}"
        return {
            "melody": self.melody(source.tokens[index], safe_name(f"{title}_{index}")),
            "index": index,
            "windows": len(source),
            "song": title,
        }

    def midi(self, tokens: np.ndarray, tempo: float) -> bytes:
        signature = self.grid.time_signature
        return tokens_to_score(
            tokens, self.rep, tempo_bpm=tempo, time_signature=signature
        ).dumps_midi()

    # ------------------------------------------------------------------ warm-up

    def warm_up(self) -> float:
        """Compile the prior, encoder and decoder for the page's row buckets; seconds taken."""
        start = time.perf_counter()
        one_note = Notes(np.array([0]), np.array([4]), np.array([60]))
        melody = self.rep.encode(one_note, self.window).astype(np.int32)
        for rows in WARM_BUCKETS:
            if rows > self.model.batch_size:
                break
            for temperature in (0.0, 1.0):
                self.model.sample(rows, None, temperature, 0)
            self.model.encode([melody] * rows)
        if self.model.controllable:
            self.model.edit(melody, 0.5)
        seconds = time.perf_counter() - start
        logger.info("compiled the model's functions in %.1f s", seconds)
        return seconds
