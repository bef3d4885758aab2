"""Bar grids: which declared meters a dataset keeps and how its bars and beats are laid out.

A dataset (and a model trained on it) has one *grid*: a bar length in 16th-note
steps, a beat length, and the time signature its MIDI files are written with.
Windows are whole bars of that grid, so every declared meter must map onto it:

| grid | bar | beat | kept meters (their bar in steps) | written as |
|---|---|---|---|---|
| `duple` (default) | 16 | 4 | 4/4, 2/2, 8/8; 2/4, 4/8 (8: paired); 4/2, 8/4, 2/1 (split) | 4/4 |
| `triple` | 12 | 4 | 3/4 | 3/4 |
| `compound` | 12 | 6 | 6/8; 3/8 (6: paired); 12/8 (24: split) | 6/8 |
| `compound-triple` | 18 | 6 | 9/8 | 9/8 |
| `magenta` | 16 | 4 | every meter: 16-step bars from each section's start, as Magenta | 4/4 |

A list of meters (`3/4` or `6/8,12/8`) selects part of one grid's meters; any
other single meter (`3/2`, `6/4`, `5/4`) gets a grid of its own (`meter_grid`).

Notation artefacts: a stretch declared 1/4, 1/8, 1/2 or 4/1 (one beat per "bar", or
one bar per four) says nothing about the real bar. `regroup` decides it from the
notes: the duration-weighted onset train of a real meter repeats at its bar
length (and at two and four bars), so the candidate bar (12 or 16 steps) whose
lags correlate best wins if it beats the other by `REGROUP_MARGIN`; the bar
lines go where the most note duration starts (downbeats carry long notes). A
stretch shorter than four bars of 16 (a pickup) is not regrouped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STEPS_PER_WHOLE = 16  # steps of a whole note: the grid is 16th notes
ARTEFACT_METERS = ((1, 4), (1, 8), (1, 2), (4, 1))
REGROUP_CANDIDATES = (12, 16)
REGROUP_MARGIN = 0.05
REGROUP_MIN_STEPS = 4 * 16


@dataclasses.dataclass(frozen=True)
class Grid:
    """Bars and beats of one dataset; `meters` maps a kept declared meter to its ratio."""

    name: str
    steps_per_bar: int
    steps_per_beat: int
    time_signature: tuple[int, int]
    # (numerator, denominator) -> real bars per grid bar (2: pairs; 0.5: a bar is split).
    meters: dict[tuple[int, int], float]
    # Metrical levels, strongest first: (period in steps, LHL weight, metrical weight).
    levels: tuple[tuple[int, int, float], ...]
    ignores_meter: bool = False

    def keeps(self, numerator: int, denominator: int) -> bool:
        return self.ignores_meter or (numerator, denominator) in self.meters

    def select(self, meters: tuple[tuple[int, int], ...]) -> Grid:
        """This grid keeping only `meters` (each must be one of its own)."""
        unknown = [m for m in meters if m not in self.meters]
        if unknown:
            raise ValueError(
                f"meter {unknown[0][0]}/{unknown[0][1]} is not on the {self.name} grid "
                f"({', '.join(f'{a}/{b}' for a, b in self.meters)})"
            )
        return dataclasses.replace(self, meters={m: self.meters[m] for m in meters})


_DUPLE_LEVELS = ((16, 0, 1.0), (8, -1, 0.75), (4, -2, 0.5), (2, -3, 0.25), (1, -4, 0.0))

GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        Grid(
            "duple",
            16,
            4,
            (4, 4),
            {
                (4, 4): 1,
                (2, 2): 1,
                (8, 8): 1,
                (2, 4): 2,
                (4, 8): 2,
                (4, 2): 0.5,
                (8, 4): 0.5,
                (2, 1): 0.5,
            },
            _DUPLE_LEVELS,
        ),
        Grid(
            "triple",
            12,
            4,
            (3, 4),
            {(3, 4): 1},
            ((12, 0, 1.0), (4, -2, 0.5), (2, -3, 0.25), (1, -4, 0.0)),
        ),
        Grid(
            "compound",
            12,
            6,
            (6, 8),
            {(6, 8): 1, (3, 8): 2, (12, 8): 0.5},
            ((12, 0, 1.0), (6, -2, 0.5), (2, -3, 0.25), (1, -4, 0.0)),
        ),
        Grid(
            "compound-triple",
            18,
            6,
            (9, 8),
            {(9, 8): 1},
            ((18, 0, 1.0), (6, -2, 0.5), (2, -3, 0.25), (1, -4, 0.0)),
        ),
        Grid("magenta", 16, 4, (4, 4), {}, _DUPLE_LEVELS, ignores_meter=True),
    )
}
DEFAULT_GRID = GRIDS["duple"]


def bar_steps(numerator: int, denominator: int) -> float:
    """Length of one bar of `numerator`/`denominator` in 16th-note steps."""
    return numerator * STEPS_PER_WHOLE / denominator


def meter_grid(numerator: int, denominator: int) -> Grid:
    """The grid of one meter that no named grid keeps (3/2, 6/4, 5/4, 7/8 ...).

    Its bar is the meter's bar; its beat is a dotted note for compound meters
    (numerator 6, 9, 12 ...) and the denominator's note otherwise; the levels
    below the beat halve (a compound beat splits in three first).
    """
    bar, unit = bar_steps(numerator, denominator), STEPS_PER_WHOLE / denominator
    compound = numerator % 3 == 0 and numerator > 3
    beat = 3 * unit if compound else unit
    if bar != int(bar) or beat != int(beat) or bar < 1:
        raise ValueError(
            f"meter {numerator}/{denominator}: its bar or beat is not a whole number of "
            "16th-note steps"
        )
    levels = [(int(bar), 0, 1.0)]
    if not compound and numerator % 2 == 0 and numerator >= 4:
        levels.append((int(bar) // 2, -1, 0.75))
    if beat < bar:
        levels.append((int(beat), -2, 0.5))
    step, depth = int(beat) // 3 if compound else int(beat) // 2, -3
    while step >= 1:
        levels.append((step, depth, 0.25 if depth == -3 else 0.0))
        step, depth = step // 2, depth - 1
    return Grid(
        f"{numerator}/{denominator}",
        int(bar),
        int(beat),
        (numerator, denominator),
        {(numerator, denominator): 1},
        tuple(levels),
    )


def parse_meter(text: str) -> Grid:
    """A grid name (`duple`, `triple`, ...), meters of one named grid (`6/8,12/8`), or one
    meter no named grid keeps (`3/2`: its own grid, `meter_grid`)."""
    text = text.strip()
    if text in GRIDS:
        return GRIDS[text]
    try:
        meters = tuple(
            (int(a), int(b)) for a, b in (part.split("/") for part in text.split(",") if part)
        )
    except ValueError:
        meters = ()
    if not meters or min(min(m) for m in meters) < 1:
        raise ValueError(
            f"--meter {text!r}: give one of {', '.join(GRIDS)} or meters such as 3/4 or 6/8,12/8"
        )
    for grid in GRIDS.values():
        if all(m in grid.meters for m in meters):
            return grid.select(meters)
    if len(meters) == 1:
        return meter_grid(*meters[0])
    raise ValueError(
        f"--meter {text!r}: these meters do not share one grid (bar and beat); "
        + "; ".join(
            f"{g.name}: {', '.join(f'{a}/{b}' for a, b in g.meters)}"
            for g in GRIDS.values()
            if g.meters
        )
    )


def grid_named(name: str) -> Grid:
    """A named grid, or the grid of one meter (`3/2`) as `meter_grid` makes it."""
    if name in GRIDS:
        return GRIDS[name]
    try:
        numerator, denominator = (int(x) for x in name.split("/"))
    except ValueError:
        raise ValueError(f"unknown grid {name!r}: one of {', '.join(GRIDS)} or a meter") from None
    return meter_grid(numerator, denominator)


def _lag_score(train: np.ndarray, lag: int) -> float:
    """Mean cosine similarity of `train` with itself shifted by one, two and four `lag`s
    (over the overlap, so longer lags are not penalised for overlapping less)."""
    values = []
    for k in (lag, 2 * lag, 4 * lag):
        a, b = train[:-k], train[k:]
        norm = float(np.sqrt((a @ a) * (b @ b))) if k < len(train) else 0.0
        if norm > 0:
            values.append(float(a @ b) / norm)
    return float(np.mean(values)) if values else 0.0


def regroup(onsets: np.ndarray, durations: np.ndarray, num_steps: int) -> tuple[int, int] | None:
    """(bar length, first bar line) of a stretch declared in an artefact meter, or None.

    None when the stretch is shorter than REGROUP_MIN_STEPS or no candidate bar wins by
    REGROUP_MARGIN. The first bar line is a multiple of 4 steps (a quarter) below the
    bar length.
    """
    onsets = np.asarray(onsets, np.int64)
    if num_steps < REGROUP_MIN_STEPS or len(onsets) < 8:
        return None
    train = np.zeros(num_steps)
    np.add.at(train, np.clip(onsets, 0, num_steps - 1), np.clip(durations, 1, 16))
    scores = {bar: _lag_score(train, bar) for bar in REGROUP_CANDIDATES}
    best = max(scores, key=scores.get)
    if scores[best] - max(v for b, v in scores.items() if b != best) < REGROUP_MARGIN:
        return None
    mass = [train[phase::best].sum() for phase in range(0, best, 4)]
    return best, 4 * int(np.argmax(mass))
