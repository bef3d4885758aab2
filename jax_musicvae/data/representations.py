"""Token representations of a monophonic line on a 16-steps-per-bar grid.

Two encodings, both one token per 16th-note step:

- ``pianoroll61`` (the original thesis): token ``p - 24`` while MIDI pitch
  ``p`` in 24..83 sounds, ``60`` when silent. Polyphony is reduced to a
  "skyline" (the highest sounding pitch at each step). A held note and a
  repeated note look the same, so decoding merges equal neighbouring tokens
  into one note: tokens -> notes -> tokens is the identity, and MIDI ->
  tokens -> MIDI -> tokens is idempotent after one pass.
- ``melody90`` (Magenta MusicVAE): ``0`` no event (hold the note or rest),
  ``1`` note off, ``2 + p - 21`` note on for pitch ``p`` in 21..108. Notes that
  start together keep the highest; a new note ends the previous one.
  Canonical sequences (no note-off without a sounding note) are exactly
  reproduced by tokens -> notes -> tokens.

Notes are passed as three int arrays (onset step, end step exclusive, pitch).
Everything is numpy; the same code serves the Flax model and the torch reference.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import numpy as np

STEPS_PER_BAR = 16  # of the default (duple) grid; `meters.py` has the others


class Notes(NamedTuple):
    """Notes on the step grid: onset (inclusive), end (exclusive), MIDI pitch."""

    onsets: np.ndarray
    ends: np.ndarray
    pitches: np.ndarray

    @classmethod
    def empty(cls) -> Notes:
        z = np.zeros(0, np.int32)
        return cls(z, z.copy(), z.copy())


class Representation(abc.ABC):
    """Encode notes to tokens and back; operations used to cut and filter windows."""

    name: str
    depth: int
    # Token that pads a sequence with silence (appended after the last note).
    pad_token: int

    @abc.abstractmethod
    def encode(self, notes: Notes, num_steps: int) -> np.ndarray:
        """Tokens (uint8, length num_steps) of one instrument's notes."""

    @abc.abstractmethod
    def decode(self, tokens: np.ndarray) -> Notes:
        """Notes that `encode` maps back to `tokens` (for canonical tokens)."""

    @abc.abstractmethod
    def sounding(self, tokens: np.ndarray) -> np.ndarray:
        """Boolean mask [..., T]: a note sounds at this step."""

    @abc.abstractmethod
    def sequences(
        self, notes: Notes, num_steps: int, steps_per_bar: int = STEPS_PER_BAR
    ) -> list[np.ndarray]:
        """Bar-aligned token sequences of one instrument from which windows are cut."""

    @abc.abstractmethod
    def transpose(self, tokens: np.ndarray, semitones: int) -> tuple[np.ndarray, np.ndarray]:
        """Shift pitches of windows [W, T]; returns (windows, valid [W]) where valid
        is False for windows that would leave the pitch range."""

    def canonical(self, tokens: np.ndarray) -> np.ndarray:
        """The form of windows [W, T] that a decode/encode round trip reproduces."""
        return tokens


def _forward_fill_last_event(tokens: np.ndarray, include_self: bool) -> np.ndarray:
    """For each step of [W, T], the last non-zero token at or before it (0 when none)."""
    t = tokens.shape[-1]
    idx = np.where(tokens != 0, np.arange(t), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    if not include_self:
        last = np.concatenate([np.full(last.shape[:-1] + (1,), -1), last[..., :-1]], axis=-1)
    vals = np.take_along_axis(tokens, np.maximum(last, 0), axis=-1)
    return np.where(last >= 0, vals, 0)


class PianoRoll61(Representation):
    name = "pianoroll61"
    depth = 61
    low = 24
    high = 83
    silent = 60
    pad_token = silent

    def encode(self, notes: Notes, num_steps: int) -> np.ndarray:
        keep = (notes.pitches >= self.low) & (notes.pitches <= self.high)
        on = notes.onsets[keep].astype(np.int64)
        end = np.minimum(notes.ends[keep], num_steps).astype(np.int64)
        length = np.maximum(end - on, 0)
        best = np.full(num_steps, -1, np.int64)
        if length.sum():
            starts = np.repeat(on - np.cumsum(length) + length, length)
            steps = starts + np.arange(length.sum())
            np.maximum.at(best, steps, np.repeat(notes.pitches[keep] - self.low, length))
        return np.where(best < 0, self.silent, best).astype(np.uint8)

    def decode(self, tokens: np.ndarray) -> Notes:
        tokens = np.asarray(tokens).astype(np.int32)
        change = np.flatnonzero(np.diff(tokens, prepend=-1, append=-1))
        starts, ends = change[:-1], change[1:]
        vals = tokens[starts]
        keep = vals != self.silent
        return Notes(
            starts[keep].astype(np.int32), ends[keep].astype(np.int32), vals[keep] + self.low
        )

    def sounding(self, tokens: np.ndarray) -> np.ndarray:
        return tokens != self.silent

    def sequences(
        self, notes: Notes, num_steps: int, steps_per_bar: int = STEPS_PER_BAR
    ) -> list[np.ndarray]:
        return [self.encode(notes, num_steps)] if num_steps else []

    def transpose(self, tokens: np.ndarray, semitones: int) -> tuple[np.ndarray, np.ndarray]:
        tok = tokens.astype(np.int16)
        notes = tok != self.silent
        shifted = np.where(notes, tok + semitones, tok)
        bad = notes & ((shifted < 0) | (shifted >= self.silent))
        return shifted.astype(np.uint8), ~bad.any(axis=-1)


class Melody90(Representation):
    name = "melody90"
    depth = 90
    low = 21
    high = 108
    no_event = 0
    note_off = 1
    first_note_on = 2
    pad_token = no_event

    def monophonic(self, notes: Notes, num_steps: int) -> Notes:
        """Highest pitch among notes starting together; a new onset ends the previous note."""
        keep = (notes.pitches >= self.low) & (notes.pitches <= self.high)
        keep &= notes.onsets < num_steps
        on, end, pitch = notes.onsets[keep], notes.ends[keep], notes.pitches[keep]
        order = np.lexsort((-pitch, on))
        on, end, pitch = on[order], end[order], pitch[order]
        first = np.ones(len(on), bool)
        first[1:] = on[1:] != on[:-1]
        on, end, pitch = on[first], end[first], pitch[first]
        nxt = np.append(on[1:], num_steps)
        end = np.minimum(np.maximum(end, on + 1), nxt)
        return Notes(on.astype(np.int32), end.astype(np.int32), pitch.astype(np.int32))

    def encode(self, notes: Notes, num_steps: int) -> np.ndarray:
        on, end, pitch = self.monophonic(notes, num_steps)
        tokens = np.zeros(num_steps, np.uint8)
        nxt = np.append(on[1:], num_steps)
        off = end[(end < nxt) & (end < num_steps)]
        tokens[off] = self.note_off
        tokens[on] = pitch - self.low + self.first_note_on
        return tokens

    def decode(self, tokens: np.ndarray) -> Notes:
        tokens = np.asarray(tokens).astype(np.int32)
        events = np.flatnonzero(tokens)
        ends_at = np.append(events[1:], len(tokens))
        is_on = tokens[events] >= self.first_note_on
        return Notes(
            events[is_on].astype(np.int32),
            ends_at[is_on].astype(np.int32),
            tokens[events[is_on]] - self.first_note_on + self.low,
        )

    def sounding(self, tokens: np.ndarray) -> np.ndarray:
        return _forward_fill_last_event(tokens, include_self=True) >= self.first_note_on

    def sequences(
        self, notes: Notes, num_steps: int, steps_per_bar: int = STEPS_PER_BAR
    ) -> list[np.ndarray]:
        """Melodies of one instrument: each starts at the bar of its first note and
        ends (rounded up to a bar) after a silent gap of at least one bar."""
        bar = steps_per_bar
        mono = self.monophonic(notes, num_steps)
        if not len(mono.onsets):
            return []
        tokens = self.encode(mono, num_steps)
        gap = mono.onsets[1:] - mono.ends[:-1] >= bar
        cut = np.flatnonzero(gap)
        firsts = np.concatenate([[0], cut + 1])
        lasts = np.concatenate([cut, [len(mono.onsets) - 1]])
        out = []
        for a, b in zip(firsts, lasts, strict=True):
            start = mono.onsets[a] // bar * bar
            stop = min(-(-mono.ends[b] // bar) * bar, num_steps)
            out.append(tokens[start:stop])
        return out

    def canonical(self, tokens: np.ndarray) -> np.ndarray:
        """Drop note-offs with no sounding note (a window cut inside a rest or a hold)."""
        prev = _forward_fill_last_event(tokens, include_self=False)
        orphan = (tokens == self.note_off) & (prev < self.first_note_on)
        return np.where(orphan, self.no_event, tokens).astype(tokens.dtype)

    def transpose(self, tokens: np.ndarray, semitones: int) -> tuple[np.ndarray, np.ndarray]:
        tok = tokens.astype(np.int16)
        notes = tok >= self.first_note_on
        shifted = np.where(notes, tok + semitones, tok)
        bad = notes & ((shifted < self.first_note_on) | (shifted >= self.depth))
        return shifted.astype(np.uint8), ~bad.any(axis=-1)


REPRESENTATIONS: dict[str, Representation] = {r.name: r for r in (PianoRoll61(), Melody90())}


def get_representation(name: str) -> Representation:
    """The representation called `name`, with a message listing the valid names."""
    try:
        return REPRESENTATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}"
        ) from None
