"""Real MIDI files in (note arrays on a 16th-note grid) and token sequences out.

Why symusic: its C++ parser reads ~3,400 files/s where pretty_midi reads ~15,
which is what makes a 17k-file Lakh build take minutes instead of an hour.

Parsing works in ticks, so the grid (a quarter of a quarter note) does not
depend on the tempo. A song is cut into *sections*:

- a time-signature change starts a section. Windows are whole bars of the
  dataset's grid (`meters.py`: 16 steps for duple meters by default, 12 for 3/4
  or 6/8, 18 for 9/8), so a meter is kept only when its bar lines land on that
  grid: bars of the grid's length as they are, half bars (2/4 on the duple
  grid, 3/8 on the compound one) paired from the section's first bar line (a
  dangling half bar at the end is dropped), double bars (4/2, 12/8) split in
  two. Other meters would put the grid's bar lines inside real bars, so their
  sections are dropped and counted in `ParsedMidi.dropped`. Stretches declared
  in a notation artefact (1/4, 1/8, 1/2, 4/1) are regrouped into real bars where
  the notes show the bar length (`meters.regroup`); a short one (a pickup
  written as its own 1/4 or 2/4 bar) is dropped, so the bar lines of the rest
  stay on the grid. The `magenta` grid ignores the declared meter and cuts
  16-step bars from each section's start. A file without a time signature is
  4/4 (the MIDI default);
- a tempo change starts a section at the next bar line (the bar containing the
  change stays whole); sections whose tempo is absurd (outside
  [min_bpm, max_bpm]) are dropped;
- drum notes (channel 10) are left out and only counted;
- a note belongs to the section where it starts and is cut at its end; a note
  of zero length (or one quantised to zero) lasts one step;
- type-0 files are split per channel by symusic, so each channel is its own
  instrument.

The usable sections are laid end to end: all note arrays use step positions in
that concatenation, and windows are cut inside one section only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import symusic

from jax_musicvae.data.meters import (
    ARTEFACT_METERS,
    DEFAULT_GRID,
    GRIDS,
    Grid,
    bar_steps,
    meter_grid,
    regroup,
)
from jax_musicvae.data.representations import Notes, Representation
from jax_musicvae.data.types import SongRhythm

logger = logging.getLogger(__name__)

MIN_BPM = 20.0
MAX_BPM = 400.0
DEFAULT_BPM = 120.0
# Longer songs (over 11 hours at 120 bpm) are corrupt timing, not music.
MAX_BARS = 20_000
STEPS_PER_QUARTER = 4


class MidiError(ValueError):
    """A file cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One non-drum instrument (a MIDI track, or a channel of a type-0 file)."""

    name: str
    program: int
    notes: Notes


@dataclasses.dataclass(frozen=True)
class Section:
    """A stretch of constant tempo in a meter that fits the grid's bars."""

    start: int
    num_steps: int
    tempo_bpm: float
    meter: str = "4/4"  # as declared; "1/4 regrouped" for a regrouped artefact


@dataclasses.dataclass(frozen=True)
class ParsedMidi:
    tracks: tuple[Track, ...]
    sections: tuple[Section, ...]
    drum_onset_count: int
    # Why parts of the song were left out: reason -> number of sections.
    dropped: dict[str, int]
    grid: Grid = DEFAULT_GRID

    @property
    def num_steps(self) -> int:
        return sum(s.num_steps for s in self.sections)

    def section_notes(self, track: Track, section: Section) -> Notes:
        """Notes of `track` in `section`, relative to the section's start."""
        n = track.notes
        sel = (n.onsets >= section.start) & (n.onsets < section.start + section.num_steps)
        return Notes(n.onsets[sel] - section.start, n.ends[sel] - section.start, n.pitches[sel])

    def busiest_track(self) -> Track:
        return max(self.tracks, key=lambda t: len(t.notes.onsets))

    def rhythm(self) -> SongRhythm:
        """Onsets of all non-drum notes, for the `rhythm` danceability estimator."""
        onsets = np.sort(np.concatenate([t.notes.onsets for t in self.tracks]))
        weights = np.array([s.num_steps for s in self.sections], float)
        tempos = np.array([s.tempo_bpm for s in self.sections])
        return SongRhythm(
            onset_steps=onsets.astype(np.int32),
            num_steps=self.num_steps,
            tempo_bpm=float((weights * tempos).sum() / weights.sum()),
            drum_onset_count=self.drum_onset_count,
            grid=self.grid.name,
        )

    @property
    def meters(self) -> dict[str, int]:
        """Steps kept per declared meter."""
        out: dict[str, int] = {}
        for section in self.sections:
            out[section.meter] = out.get(section.meter, 0) + section.num_steps
        return out


def _read_score(source: str | Path | bytes, label: str) -> symusic.Score:
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as e:
        raise MidiError(f"{label}: cannot read file: {e.strerror or e}") from None
    if not data:
        raise MidiError(f"{label}: empty file")
    if not data.startswith(b"MThd"):
        raise MidiError(f"{label}: not a MIDI file (no MThd header)")
    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError with its own text
        raise MidiError(f"{label}: corrupt or truncated MIDI: {e}") from None
    if score.ticks_per_quarter <= 0:
        raise MidiError(f"{label}: invalid ticks per quarter {score.ticks_per_quarter}")
    return score


def _meter_segments(score: symusic.Score, end: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, numerator, denominator) in ticks, last time signature per tick."""
    sigs: dict[int, tuple[int, int]] = {}
    for ts in score.time_signatures:
        sigs[max(int(ts.time), 0)] = (int(ts.numerator), int(ts.denominator))
    if 0 not in sigs:
        sigs[0] = (4, 4)
    times = sorted(t for t in sigs if t < end) or [0]
    stops = [*times[1:], end]
    return [(a, b, *sigs[a]) for a, b in zip(times, stops, strict=True) if b > a]


def _meter_drop_reason(numerator: int, denominator: int, grid: Grid) -> str:
    """Why a declared meter is not kept on `grid`, and which --meter would keep it."""
    steps = bar_steps(numerator, denominator)
    others = [g.name for g in GRIDS.values() if (numerator, denominator) in g.meters]
    try:
        own = meter_grid(numerator, denominator).name
    except ValueError:  # a bar or beat that is not a whole number of steps
        own = None
    keeper = others[0] if others else own
    hint = f"--meter {keeper} keeps it" if keeper else "--meter magenta cuts 16-step bars"
    return (
        f"meter {numerator}/{denominator} (bar of {steps:g} sixteenths, not on the "
        f"{grid.name} grid; {hint})"
    )


def _segment_onsets(
    pitched: list, start: float, stop: float, step_ticks: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """(onset steps, durations in steps, length in steps) of all pitched notes in a stretch."""
    onsets, durations = [], []
    for _, arr in pitched:
        sel = (arr["time"] >= start) & (arr["time"] < stop)
        onsets.append(np.floor((arr["time"][sel] - start) / step_ticks + 0.5))
        durations.append(np.maximum(np.round(arr["duration"][sel] / step_ticks), 1))
    length = int((stop - start) / step_ticks)
    return np.concatenate(onsets).astype(np.int64), np.concatenate(durations), length


def _tempo_at(tempos: list[tuple[int, float]], tick: float) -> float:
    qpm = DEFAULT_BPM
    for t, q in tempos:
        if t > tick:
            break
        qpm = q
    return qpm


def parse_midi(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    min_bpm: float = MIN_BPM,
    max_bpm: float = MAX_BPM,
    max_bars: int = MAX_BARS,
    grid: Grid = DEFAULT_GRID,
) -> ParsedMidi:
    """Parse a MIDI file (path or bytes) into usable sections of `grid`; raises MidiError."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    score = _read_score(source, label)
    tpq = score.ticks_per_quarter
    step_ticks = tpq / STEPS_PER_QUARTER
    bar_ticks = step_ticks * grid.steps_per_bar

    pitched, drums = [], []
    for track in score.tracks:
        if len(track.notes) == 0:
            continue
        arr = track.notes.numpy()
        (drums if track.is_drum else pitched).append((track, arr))
    if not pitched:
        raise MidiError(f"{label}: {'only drum notes' if drums else 'no notes'}")
    end = max(int((a["time"] + a["duration"]).max()) for _, a in pitched)
    end = max(end, max(int(a["time"].max()) + 1 for _, a in pitched))

    tempos: list[tuple[int, float]] = []
    for tp in score.tempos:
        t, q = max(int(tp.time), 0), round(float(tp.qpm), 2)
        if tempos and tempos[-1][0] == t:
            tempos[-1] = (t, q)
        elif not tempos or tempos[-1][1] != q:
            tempos.append((t, q))

    dropped: dict[str, int] = {}
    spans: list[tuple[float, int, float, str]] = []  # (start tick, bars, bpm, meter)
    for a, b, num, den in _meter_segments(score, end):
        meter = f"{num}/{den}"
        # Real bars per grid bar: 2 for half bars (pairs), else 1 (the grid from the
        # section start already splits a double bar in two).
        per = 1
        if grid.keeps(num, den):
            per = 2 if grid.meters.get((num, den)) == 2 else 1
        elif (num, den) in ARTEFACT_METERS:
            found = regroup(*_segment_onsets(pitched, a, b, step_ticks))
            if found is None or found[0] != grid.steps_per_bar:
                reason = (
                    f"meter {meter} (a pickup, or no clear bar length in the notes)"
                    if found is None
                    else f"meter {meter} (regrouped into bars of {found[0]} steps, not "
                    f"the {grid.name} grid's {grid.steps_per_bar})"
                )
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            a += found[1] * step_ticks
            meter = f"{meter} regrouped"
        else:
            reason = _meter_drop_reason(num, den, grid)
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        last = b == end
        cuts = {a + math.ceil((t - a) / bar_ticks) * bar_ticks for t, _ in tempos if a < t < b}
        bounds = sorted(c for c in cuts if c < b)
        for c0, c1 in zip([a, *bounds], [*bounds, b], strict=True):
            span = (c1 - c0) / bar_ticks
            if last and c1 == b:  # the song's last bar counts even when it is cut short
                bars = math.ceil(span * per - 1e-9) // per
            else:
                bars = math.floor(span + 1e-9)
            bpm = _tempo_at(tempos, c0)
            if bars <= 0:
                continue
            if not min_bpm <= bpm <= max_bpm:
                key = f"tempo {bpm:.6g} bpm outside [{min_bpm:g}, {max_bpm:g}]"
                dropped[key] = dropped.get(key, 0) + 1
                continue
            spans.append((float(c0), bars, bpm, meter))
    total_bars = sum(span[1] for span in spans)
    if total_bars > max_bars:
        raise MidiError(f"{label}: too long ({total_bars} bars > {max_bars})")
    if not spans:
        reasons = "; ".join(sorted(dropped)) or "no whole bar"
        raise MidiError(f"{label}: no usable section ({reasons})")

    sections, offset = [], 0
    for _, bars, bpm, meter in spans:
        sections.append(Section(offset, bars * grid.steps_per_bar, bpm, meter))
        offset += bars * grid.steps_per_bar

    def place(arr: dict[str, np.ndarray]) -> Notes:
        time = arr["time"].astype(np.float64)
        stop = time + arr["duration"].astype(np.float64)
        parts = []
        for (c0, *_), sec in zip(spans, sections, strict=True):
            on = np.floor((time - c0) / step_ticks + 0.5).astype(np.int64)
            sel = (time >= c0) & (on >= 0) & (on < sec.num_steps)
            off = np.floor((stop[sel] - c0) / step_ticks + 0.5).astype(np.int64)
            off = np.clip(off, on[sel] + 1, sec.num_steps)
            pitch = arr["pitch"][sel].astype(np.int64)
            parts.append((on[sel] + sec.start, off + sec.start, pitch))
        on, off, pitch = (np.concatenate(x) for x in zip(*parts, strict=True))
        order = np.lexsort((pitch, on))
        return Notes(
            on[order].astype(np.int32), off[order].astype(np.int32), pitch[order].astype(np.int32)
        )

    tracks = []
    for track, arr in pitched:
        notes = place(arr)
        if len(notes.onsets):
            tracks.append(Track(str(track.name).strip("\x00 "), int(track.program), notes))
    if not tracks:
        raise MidiError(f"{label}: no non-drum notes in the usable sections")
    drum_count = sum(len(place(arr).onsets) for _, arr in drums)
    return ParsedMidi(tuple(tracks), tuple(sections), drum_count, dropped, grid)


def song_tokens(parsed: ParsedMidi, representation: Representation) -> np.ndarray:
    """The busiest instrument of the whole song as one token sequence (no windowing)."""
    return representation.encode(parsed.busiest_track().notes, parsed.num_steps)


def tokens_to_score(
    tokens: np.ndarray,
    representation: Representation,
    *,
    tempo_bpm: float = DEFAULT_BPM,
    program: int = 0,
    ticks_per_quarter: int = 480,
    velocity: int = 100,
    time_signature: tuple[int, int] = (4, 4),
) -> symusic.Score:
    """A one-track score of `tokens` at `tempo_bpm` in `time_signature` (the model's grid)."""
    if not MIN_BPM <= tempo_bpm <= MAX_BPM:
        raise ValueError(f"tempo_bpm={tempo_bpm} must be in [{MIN_BPM:g}, {MAX_BPM:g}]")
    notes = representation.decode(np.asarray(tokens))
    step = ticks_per_quarter // STEPS_PER_QUARTER
    score = symusic.Score(ticks_per_quarter)
    score.tempos.append(symusic.Tempo(0, float(tempo_bpm)))
    score.time_signatures.append(symusic.TimeSignature(0, *time_signature))
    track = symusic.Track(representation.name, int(program), False)
    track.notes = symusic.core.NoteTickList.from_numpy(
        (notes.onsets * step).astype(np.int32),
        ((notes.ends - notes.onsets) * step).astype(np.int32),
        notes.pitches.astype(np.int8),
        np.full(len(notes.onsets), velocity, np.int8),
    )
    score.tracks.append(track)
    return score


def write_midi(
    tokens: np.ndarray,
    representation: Representation,
    path: str | Path,
    *,
    tempo_bpm: float = DEFAULT_BPM,
    program: int = 0,
    time_signature: tuple[int, int] = (4, 4),
) -> Path:
    """Write `tokens` as a MIDI file at `tempo_bpm` (default 120) in `time_signature`."""
    path = Path(path)
    score = tokens_to_score(
        tokens, representation, tempo_bpm=tempo_bpm, program=program, time_signature=time_signature
    )
    path.write_bytes(score.dumps_midi())
    return path


def read_tokens(
    path: str | Path,
    representation: Representation,
    num_steps: int | None = None,
    grid: Grid = DEFAULT_GRID,
) -> np.ndarray:
    """Tokens of a MIDI file's busiest instrument over `num_steps` (default: the song).

    Pass the original length when reading back a written sequence: a file ends
    with its last note, so a trailing rest (and a note-off) needs the length.
    """
    parsed = parse_midi(path, grid=grid)
    return representation.encode(parsed.busiest_track().notes, num_steps or parsed.num_steps)
