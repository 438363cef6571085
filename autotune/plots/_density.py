"""Large studies drawn as a density: binned counts of the trials computed here, drawn by the
browser as one heatmap image, with the best trials on top as markers (with hover).

Each marker of a scatter trace is an SVG element, and drawing them is what a large study's page
spends its time on (a 2,000-marker slice took longer to draw than the rest of a figure); past
``DENSITY_THRESHOLD`` completed trials the history and slice figures show where the trials are
as counts per cell instead, whose cost does not grow with the study. Studies up to the
threshold are drawn trial by trial as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from autotune.plots._common import DEFAULT_MAX_POINTS, Objective, ParamAxis, colorbar
from autotune.space import Int

__all__ = [
    "DENSITY_THRESHOLD",
    "DENSITY_BEST",
    "use_density",
    "value_edges",
    "axis_edges",
    "counts_2d",
    "density_trace",
    "density_colorbar",
    "best_of",
    "density_note",
]

# Past this many completed trials the default figure would show a sample of the markers
# (``DEFAULT_MAX_POINTS``); from there on it shows a density of all of them instead.
DENSITY_THRESHOLD = DEFAULT_MAX_POINTS
# How many of the best trials are drawn as markers over a density.
DENSITY_BEST = 100
# Cells along a continuous axis (an integer or categorical one gets a cell per level up to it).
DENSITY_BINS = 40
# Light to dark: an empty cell is transparent (not drawn), one trial already visible.
# Half the width of the one cell around a single value on a log axis (a factor of ~1.4).
_LOG_HALF_CELL = float(np.sqrt(2.0))
DENSITY_COLORSCALE = [[0.0, "#d6e4f2"], [0.35, "#6baed6"], [1.0, "#08306b"]]


def use_density(n_completed: int, max_points: int | None) -> bool:
    """Whether a figure shows a density: only by default (no ``max_points`` asked for) and
    past ``DENSITY_THRESHOLD`` completed trials."""
    return max_points is None and n_completed > DENSITY_THRESHOLD


def value_edges(values: np.ndarray, bins: int = DENSITY_BINS) -> np.ndarray:
    """``bins`` equal cells over the finite ``values`` (one cell around a single value)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi == lo:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, bins + 1)


def axis_edges(ax: ParamAxis, param: Any, pos: np.ndarray, bins: int = DENSITY_BINS) -> np.ndarray:
    """Cell edges along a parameter's axis over its finite positions ``pos``: one cell per
    choice or integer level (up to ``bins`` levels), else ``bins`` cells, log-spaced on a log
    axis."""
    if ax.categorical:
        return np.arange(len(ax.axis["tickvals"]) + 1) - 0.5
    lo, hi = float(np.min(pos)), float(np.max(pos))
    if isinstance(param, Int) and not ax.log and hi - lo + 1 <= bins:
        return np.arange(lo, hi + 2) - 0.5
    if ax.log and lo > 0:
        if hi == lo:  # one cell around the value, positive as a log axis needs
            return np.array([lo / _LOG_HALF_CELL, lo * _LOG_HALF_CELL])
        return np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    return value_edges(pos, bins)


def counts_2d(x: np.ndarray, y: np.ndarray, ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """Trials per cell, (len(ey) - 1, len(ex) - 1); every point counted (the last edge
    inclusive)."""
    ix = np.clip(np.searchsorted(ex, x, side="right") - 1, 0, len(ex) - 2)
    iy = np.clip(np.searchsorted(ey, y, side="right") - 1, 0, len(ey) - 2)
    counts = np.zeros((len(ey) - 1, len(ex) - 1), dtype=np.int64)
    np.add.at(counts, (iy, ix), 1)
    return counts


def density_trace(
    ex: np.ndarray, ey: np.ndarray, counts: np.ndarray, *, xlabel: str, ylabel: str, **kwargs: Any
) -> go.Heatmap:
    """A heatmap of ``counts`` on cells with edges ``ex`` by ``ey``; empty cells not drawn."""
    z = np.where(counts > 0, counts, np.nan)  # (n_y_cells, n_x_cells)
    return go.Heatmap(
        x=ex,
        y=ey,
        z=z,
        hoverongaps=False,
        hovertemplate=xlabel + " %{x}<br>" + ylabel + " %{y}<br>%{z} trials<extra></extra>",
        **kwargs,
    )


def density_colorbar(**extra: Any) -> dict[str, Any]:
    """Colour settings of a density (as a trace's or a shared ``coloraxis``' settings)."""
    return {
        "colorscale": DENSITY_COLORSCALE,
        "colorbar": colorbar("trials", thickness=12),
        **extra,
    }


def best_of(objective: Objective, y: np.ndarray, feasible: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of the ``n`` best feasible values of ``y`` (ties: the earlier first)."""
    ok = np.flatnonzero(feasible)
    order = np.argsort(objective.rank_key(y[ok]), kind="stable")[:n]
    return np.sort(ok[order])


def density_note(n_total: int, n_best: int) -> str:
    """What a density figure's title says it shows."""
    return f" (density of {n_total:,} trials, the best {n_best:,} as markers)"
