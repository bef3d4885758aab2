"""Piano-roll pictures (PNG) of token sequences, for samples and reconstructions.

Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
it is safe in headless training jobs and in threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from jax_musicvae.data.meters import DEFAULT_GRID, Grid
from jax_musicvae.data.representations import Representation


def _draw(
    ax, tokens: np.ndarray, representation: Representation, title: str | None, grid: Grid
) -> None:
    notes = representation.decode(np.asarray(tokens))
    num_steps = len(tokens)
    for on, end, pitch in zip(notes.onsets, notes.ends, notes.pitches, strict=True):
        ax.add_patch(
            Rectangle(
                (on, pitch - 0.4), end - on - 0.1, 0.8, facecolor="tab:blue", edgecolor="navy"
            )
        )
    low, high = (
        (int(notes.pitches.min()) - 2, int(notes.pitches.max()) + 2)
        if len(notes.pitches)
        else (58, 72)
    )
    ax.set_xlim(0, num_steps)
    ax.set_ylim(low, high)
    for beat in range(0, num_steps + 1, grid.steps_per_beat):
        ax.axvline(beat, color="0.92", linewidth=0.5, zorder=0)
    for bar in range(0, num_steps + 1, grid.steps_per_bar):
        ax.axvline(bar, color="0.6", linewidth=0.8, zorder=0)
    numerator, denominator = grid.time_signature
    ax.set_xlabel(f"step ({grid.steps_per_bar} per bar of {numerator}/{denominator})")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title, fontsize=9)


def save_pianoroll(
    tokens: np.ndarray,
    representation: Representation,
    path: str | Path,
    *,
    title: str | None = None,
    grid: Grid = DEFAULT_GRID,
) -> Path:
    """One token sequence as a piano-roll PNG (bar lines of `grid`)."""
    return save_pianoroll_grid(
        [tokens], representation, path, titles=[title] if title else None, grid=grid
    )


def save_pianoroll_grid(
    sequences: Sequence[np.ndarray],
    representation: Representation,
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    columns: int = 2,
    grid: Grid = DEFAULT_GRID,
) -> Path:
    """Several token sequences as a grid of piano rolls in one PNG (bar lines of `grid`)."""
    if not len(sequences):
        raise ValueError("no sequences to draw")
    if titles is not None and len(titles) != len(sequences):
        raise ValueError(f"{len(titles)} titles for {len(sequences)} sequences")
    columns = max(1, min(columns, len(sequences)))
    rows = math.ceil(len(sequences) / columns)
    fig = Figure(figsize=(6 * columns, 2.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i < len(sequences):
            _draw(ax, sequences[i], representation, titles[i] if titles else None, grid)
        else:
            ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
