"""A danceability estimate from symbolic rhythm alone (the offline `rhythm` source).

Why: Spotify's audio-features endpoint is closed to new apps, so the project
needs a value computable from the MIDI itself. Spotify describes danceability as
"tempo, rhythm stability, beat strength, and overall regularity"; groove studies
(Madison et al. 2011; Witek et al. 2014) add event density and a medium amount
of syncopation. Each feature below is mapped to 0..1 (1 = more danceable) on
the song's grid (`meters.GRIDS`; below for the default duple grid, a beat = 4
steps and a bar = 16; 3/4 has bars of 12 and beats of 4, 6/8 bars of 12 and
beats of 6, 9/8 bars of 18 and beats of 6); `u` are the unique onset steps,
`B = num_steps / beat` the number of beats:

- density        = 1 - exp(-len(u) / B)                 (onsets per beat, saturating)
- metrical       = mean metrical weight of the onsets: downbeat 1, half-bar 0.75
                   (duple only), beat 0.5, eighth 0.25, sixteenth 0 (share on
                   beats/downbeats; the grid's `levels`)
- beat_coverage  = share of beats that carry an onset  (the pulse is sounded)
- pulse_clarity  = mean of the onset autocorrelation at one beat and one bar,
                   r(k) = sum x[t] x[t+k] / sum x[t]
- regularity     = 1 - min(1, CV of inter-onset intervals)
- syncopation    = Longuet-Higgins & Lee per onset: an onset followed by silence
                   (no onset) over a stronger metrical position is syncopated by
                   the weight difference (levels bar 0, half -1, beat -2, eighth -3,
                   sixteenth -4, on the grid's levels); mean s per onset is scored
                   as a medium-is-best
                   bump, exp(-((s - 0.5) / 0.75)^2)
- tempo          = exp(-log2(bpm / 120)^2 / (2 * 0.5^2)) (preferred-tempo curve
                   around 120 beats per minute, Moelants 2002; half/double tempo
                   score 0.14; a compound beat is a dotted quarter, so 6/8 at 120
                   quarters per minute has 80 beats per minute)
- drums          = min(1, 2 * drum share of all note onsets)

danceability = sum(w_f * f), with the weights in `WEIGHTS` (they sum to 1):
density 0.25, beat_coverage 0.20, pulse_clarity 0.15, regularity 0.15,
metrical 0.05, syncopation 0.05, tempo 0.05, drums 0.10. A song without
onsets scores 0. The weights were set by hand from the features' meaning and
then checked on the embedded corpus (`scripts/rhythm_auc.py`: dance-labelled
tunes vs airs, ballads, lullabies, hymns and chorales); they are not fitted.
Metrical strength alone rewards chorales (all quarter notes on beats), which is
why it is weighted low and beat coverage carries the "beat strength" idea.
"""

from __future__ import annotations

import numpy as np

from jax_musicvae.data.meters import DEFAULT_GRID, Grid, grid_named
from jax_musicvae.data.representations import Representation
from jax_musicvae.data.types import SongRhythm

PREFERRED_BPM = 120.0

WEIGHTS: dict[str, float] = {
    "density": 0.25,
    "beat_coverage": 0.20,
    "pulse_clarity": 0.15,
    "regularity": 0.15,
    "metrical": 0.05,
    "syncopation": 0.05,
    "tempo": 0.05,
    "drums": 0.10,
}


def _level_index(steps: np.ndarray, levels: tuple) -> np.ndarray:
    """Index into `levels` of the strongest grid level each step falls on."""
    idx = np.full(steps.shape, len(levels) - 1)
    for i in reversed(range(len(levels))):
        idx = np.where(steps % levels[i][0] == 0, i, idx)
    return idx


def _syncopation_per_onset(u: np.ndarray, num_steps: int, levels: tuple) -> float:
    """Longuet-Higgins & Lee syncopation, mean per onset (each note lasts to the next onset)."""
    nxt = np.append(u[1:], max(num_steps, u[-1] + 1))
    onset_w = np.array([lvl[1] for lvl in levels])[_level_index(u, levels)]
    between_w = np.full(u.shape, -np.inf)
    for period, weight, _ in reversed(levels):
        first_multiple = (u // period + 1) * period
        between_w = np.where(first_multiple < nxt, weight, between_w)
    return float(np.mean(np.maximum(0.0, between_w - onset_w)))


def rhythm_features(rhythm: SongRhythm) -> dict[str, float]:
    """The scored features (each 0..1) plus the raw values they come from (`raw_*`)."""
    grid = grid_named(rhythm.grid)
    beat, levels = grid.steps_per_beat, grid.levels
    onsets = np.asarray(rhythm.onset_steps, dtype=np.int64)
    num_steps = max(int(rhythm.num_steps), int(onsets.max()) + 1 if onsets.size else 0)
    u = np.unique(onsets[onsets >= 0])
    total_notes = onsets.size + int(rhythm.drum_onset_count)
    drum_share = rhythm.drum_onset_count / total_notes if total_notes else 0.0
    bpm = float(rhythm.tempo_bpm) if rhythm.tempo_bpm and rhythm.tempo_bpm > 0 else PREFERRED_BPM
    bpm *= 4 / beat  # quarters per minute -> beats per minute
    tempo = float(np.exp(-(np.log2(bpm / PREFERRED_BPM) ** 2) / (2 * 0.5**2)))
    if u.size == 0 or num_steps <= 0:
        zeros = dict.fromkeys(WEIGHTS, 0.0)
        return {**zeros, "tempo": tempo, "raw_onsets_per_beat": 0.0, "raw_syncopation": 0.0}

    beats = max(num_steps / beat, 1.0)
    per_beat = u.size / beats
    metrical = float(np.mean(np.array([lvl[2] for lvl in levels])[_level_index(u, levels)]))
    n_beats = int(np.ceil(num_steps / beat))
    coverage = np.unique(u[u % beat == 0] // beat).size / n_beats

    train = np.zeros(num_steps, dtype=np.float64)
    train[u] = 1.0

    def autocorr(lag: int) -> float:
        return float(train[:-lag] @ train[lag:]) / u.size if num_steps > lag else 0.0

    pulse = 0.5 * (autocorr(beat) + autocorr(grid.steps_per_bar))
    ioi = np.diff(u)
    regularity = 1.0 - min(1.0, float(ioi.std() / ioi.mean())) if ioi.size >= 2 else 0.0
    sync = _syncopation_per_onset(u, num_steps, levels)
    return {
        "density": float(1.0 - np.exp(-per_beat)),
        "beat_coverage": float(coverage),
        "pulse_clarity": pulse,
        "regularity": regularity,
        "metrical": metrical,
        "syncopation": float(np.exp(-(((sync - 0.5) / 0.75) ** 2))),
        "tempo": tempo,
        "drums": min(1.0, 2.0 * drum_share),
        "raw_onsets_per_beat": per_beat,
        "raw_syncopation": sync,
    }


def estimate_danceability(rhythm: SongRhythm, without: str | None = None) -> float:
    """Weighted sum of the scored rhythm features, in 0..1 (0 for a song without onsets).

    `without` leaves one feature out and renormalises the other weights to sum to 1
    (the held-out variants the control analysis scores with).
    """
    if np.asarray(rhythm.onset_steps).size == 0:
        return 0.0
    features = rhythm_features(rhythm)
    weights = {name: w for name, w in WEIGHTS.items() if name != without}
    value = sum(w * features[name] for name, w in weights.items()) / sum(weights.values())
    return float(np.clip(value, 0.0, 1.0))


def melody_rhythm(
    tokens: np.ndarray,
    representation: Representation,
    tempo_bpm: float = 120.0,
    grid: Grid = DEFAULT_GRID,
) -> SongRhythm:
    """A SongRhythm from token onsets: melody90 note-ons, pianoroll61 changes of sounding pitch.

    `representation.decode` yields exactly those onsets (pianoroll61 merges equal
    neighbours into one note, melody90 starts a note at every note-on token).
    """
    tokens = np.asarray(tokens)
    onsets = representation.decode(tokens).onsets
    return SongRhythm(onsets.astype(np.int32), len(tokens), float(tempo_bpm), grid=grid.name)


def melody_danceability(
    tokens: np.ndarray,
    representation: Representation,
    tempo_bpm: float = 120.0,
    grid: Grid = DEFAULT_GRID,
) -> float:
    """The `rhythm` danceability estimate of one token sequence (0 without notes)."""
    return estimate_danceability(melody_rhythm(tokens, representation, tempo_bpm, grid))


def window_danceability_estimates(
    tokens: np.ndarray, representation: Representation, grid: Grid = DEFAULT_GRID
) -> np.ndarray:
    """`melody_danceability` of each window [N, T] (the window-level danceability)."""
    return np.array([melody_danceability(t, representation, grid=grid) for t in tokens], np.float32)


def onset_danceability(flags: np.ndarray, grid: Grid = DEFAULT_GRID) -> np.ndarray:
    """The rhythm estimate [N] of note-on patterns `flags` [N, T] (nonzero = a note starts).

    Equal patterns are scored once: the rhythm decoder's patterns for neighbouring codes
    repeat (the aimed requests of `TrainedModel` score many of them).
    """
    flags = np.asarray(flags) != 0
    scores: dict[bytes, float] = {}
    values = np.empty(len(flags), np.float32)
    for i, row in enumerate(flags):
        key = np.packbits(row).tobytes()
        if key not in scores:
            onsets = np.flatnonzero(row).astype(np.int32)
            scores[key] = estimate_danceability(SongRhythm(onsets, row.size, 120.0, grid=grid.name))
        values[i] = scores[key]
    return values
