"""How parameters relate to an objective: slice and contour (parallel coordinates are in
:mod:`autotune.plots._parcoords`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autotune.errors import ValidationError
from autotune.models import Study, Trial
from autotune.plots._common import (
    BEST_COLOR,
    Objective,
    best_indices,
    check_params,
    colorbar,
    completed_values,
    downsample,
    empty_figure,
    finish_layout,
    objective_of,
    param_axis,
    sampled_note,
    scatter_trace,
)
from autotune.plots._density import (
    DENSITY_BEST,
    axis_edges,
    best_of,
    counts_2d,
    density_colorbar,
    density_note,
    density_trace,
    use_density,
    value_edges,
)
from autotune.plots._registry import register

__all__ = ["plot_slice", "plot_contour"]

_SLICE_COLUMNS = 3
# One panel per parameter, each marker an SVG element (the cost of drawing it): by default the
# panels together draw about as many markers as one scatter figure, from 200 to 1,000 a panel.
_SLICE_MARKERS = 2000
_SLICE_PANEL_POINTS = (200, 1000)
# Trial markers over a contour (where the trials are, no hover): each is an SVG element, and
# past a thousand they cost more to draw than the contour while showing the same spread.
_CONTOUR_MAX_POINTS = 1000
# Contour grid cells per continuous axis (discrete axes get one cell per level).
_CONTOUR_BINS = 30
_COLORSCALE = "Blues"


def _colorscale(minimize: bool) -> str:
    # The best values get the darkest colour whichever the direction.
    return _COLORSCALE if not minimize else _COLORSCALE + "_r"


@register("slice", title="Slice")
def plot_slice(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    params: Sequence[str] | None = None,
    max_points: int | None = None,
) -> go.Figure:
    """The objective against each parameter, one panel per parameter, coloured by trial number.

    Args:
        study: the study.
        trials: its trials (completed ones are drawn).
        objective: which objective (default: the first).
        params: which parameters (default: all).
        max_points: at most this many trials (the best always among them). By default: up to
            2,000 completed trials, 2,000 over the panels (500 each for four parameters), from
            200 to 1,000 a panel; past 2,000, each panel a density of every trial (counts per
            cell, a heatmap) with the best 100 as markers.
    """
    obj = objective_of(study, objective)
    names = check_params(study, params)
    title = f"Slice of {obj.name}"
    kept, y, feasible = completed_values(study, trials, obj.name)
    if len(kept) == 0 or not names:
        return empty_figure(title, "No completed trials yet" if names else "No parameters")
    cols = min(_SLICE_COLUMNS, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.12 if rows > 1 else 0.0, subplot_titles=names)  # fmt: skip
    if use_density(len(kept), max_points):
        return _slice_density(fig, study, obj, names, cols, kept, y, feasible, title)
    if max_points is None:
        lo, hi = _SLICE_PANEL_POINTS
        max_points = min(hi, max(lo, _SLICE_MARKERS // max(len(names), 1)))
    idx = downsample(len(kept), max_points, keep=best_indices(obj, y))
    shown = [kept[i] for i in idx]
    ys = y[idx]
    numbers = np.fromiter((t.number for t in shown), dtype=np.int64, count=len(shown))
    for i, name in enumerate(names):
        ax = param_axis(study, name, shown)
        active = ~np.isnan(ax.positions)
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(
            scatter_trace(
                int(active.sum()),
                x=ax.positions[active],
                y=ys[active],
                mode="markers",
                name=name,
                showlegend=False,
                marker={
                    "color": numbers[active],
                    "colorscale": "Viridis",
                    "size": 5,
                    "opacity": 0.7,
                    "showscale": i == 0,
                    "colorbar": colorbar("trial"),
                },
                customdata=numbers[active],
                hovertemplate="trial %{customdata}<br>"
                + name
                + "=%{x}<br>"
                + obj.name
                + "=%{y}<extra></extra>",
            ),
            row=r,
            col=c,
        )
        axis = {k: v for k, v in ax.axis.items() if k != "title"}
        fig.update_xaxes(**axis, row=r, col=c)
    fig.update_yaxes(title_text=obj.name, col=1)
    fig.update_layout(title=title + sampled_note(len(idx), len(kept)), height=max(400, 300 * rows))
    return finish_layout(fig)


def _slice_density(
    fig: go.Figure,
    study: Study,
    obj: Objective,
    names: list[str],
    cols: int,
    kept: list[Trial],
    y: np.ndarray,
    feasible: np.ndarray,
    title: str,
) -> go.Figure:
    """Each panel: the trials where the parameter is active as counts per cell of (parameter,
    value), on one shared colour axis, and the best ``DENSITY_BEST`` feasible ones as
    markers."""
    space = study.search_space()
    top = best_of(obj, y, feasible, DENSITY_BEST)
    numbers = np.fromiter((kept[i].number for i in top), dtype=np.int64, count=len(top))
    ey = value_edges(y)  # shared by every panel, as their y axis is
    for i, name in enumerate(names):
        ax = param_axis(study, name, kept)
        active = ~np.isnan(ax.positions)
        r, c = i // cols + 1, i % cols + 1
        if active.any():
            ex = axis_edges(ax, space[name], ax.positions[active])
            counts = counts_2d(ax.positions[active], y[active], ex, ey)
            fig.add_trace(
                density_trace(
                    ex, ey, counts, xlabel=name, ylabel=obj.name, name=name, coloraxis="coloraxis"
                ),  # fmt: skip
                row=r,
                col=c,
            )
        on = active[top]
        fig.add_trace(
            go.Scatter(
                x=ax.positions[top][on],
                y=y[top][on],
                mode="markers",
                name=f"best {len(top)}",
                legendgroup="best",
                showlegend=i == 0,
                marker={"color": BEST_COLOR, "size": 5, "opacity": 0.8},
                customdata=numbers[on],
                hovertemplate="trial %{customdata}<br>"
                + name
                + "=%{x}<br>"
                + obj.name
                + "=%{y}<extra></extra>",
            ),  # fmt: skip
            row=r,
            col=c,
        )
        axis = {k: v for k, v in ax.axis.items() if k != "title"}
        fig.update_xaxes(**axis, row=r, col=c)
    fig.update_yaxes(title_text=obj.name, col=1)
    rows = math.ceil(len(names) / cols)
    fig.update_layout(
        title=title + density_note(len(kept), len(top)),
        height=max(400, 300 * rows),
        coloraxis=density_colorbar(),
    )
    return finish_layout(fig)


def _grid(pos: np.ndarray, ax_categorical: bool, n_levels: int, log: bool) -> np.ndarray:
    """Bin edges over ``pos`` (finite values): one bin per level, else ``_CONTOUR_BINS``."""
    if ax_categorical:
        return np.arange(n_levels + 1) - 0.5
    lo, hi = float(np.min(pos)), float(np.max(pos))
    if log:
        return np.logspace(np.log10(lo), np.log10(hi) + 1e-12, _CONTOUR_BINS + 1)
    if hi == lo:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, _CONTOUR_BINS + 1)


@register("contour", title="Contour of a parameter pair", applies=lambda s: len(s.space) >= 2)
def plot_contour(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    x: str | None = None,
    y: str | None = None,
    max_points: int | None = None,
) -> go.Figure:
    """The objective over a pair of parameters: the mean value of the trials in each grid cell
    (empty cells interpolated), with the trials as points.

    Args:
        study: the study.
        trials: its trials (completed ones are drawn).
        objective: which objective (default: the first).
        x: the parameter across (default: the first).
        y: the parameter up (default: the second).
        max_points: at most this many trial markers. By default a sample of 1,000 up to
            2,000 completed trials; past that the best 100 (with hover), since the contour
            already shows where the trials are.
    """
    obj = objective_of(study, objective)
    names = list(study.space)
    if len(names) < 2:
        raise ValidationError("a contour needs two parameters; this study has one", field="x")
    px = check_params(study, [x])[0] if x is not None else names[0]
    py = check_params(study, [y])[0] if y is not None else next(n for n in names if n != px)
    if px == py:
        raise ValidationError(f"x and y must be two parameters, got {px!r} twice", field="y")
    title = f"Contour of {obj.name} over {px} and {py}"
    kept, vals, feasible = completed_values(study, trials, obj.name)
    ax_x, ax_y = param_axis(study, px, kept), param_axis(study, py, kept)
    both = ~np.isnan(ax_x.positions) & ~np.isnan(ax_y.positions)
    if both.sum() < 2:
        return empty_figure(title, f"Fewer than two completed trials with both {px} and {py}")
    xs, ys, zs = ax_x.positions[both], ax_y.positions[both], vals[both]
    ex = _grid(xs, ax_x.categorical, len(ax_x.axis.get("tickvals", [])), ax_x.log)
    ey = _grid(ys, ax_y.categorical, len(ax_y.axis.get("tickvals", [])), ax_y.log)
    ix = np.clip(np.searchsorted(ex, xs, side="right") - 1, 0, len(ex) - 2)
    iy = np.clip(np.searchsorted(ey, ys, side="right") - 1, 0, len(ey) - 2)
    sums = np.zeros((len(ey) - 1, len(ex) - 1))  # (n_y_cells, n_x_cells)
    counts = np.zeros_like(sums)
    np.add.at(sums, (iy, ix), zs)
    np.add.at(counts, (iy, ix), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(counts > 0, sums / counts, np.nan)
    cx = np.sqrt(ex[:-1] * ex[1:]) if ax_x.log else (ex[:-1] + ex[1:]) / 2
    cy = np.sqrt(ey[:-1] * ey[1:]) if ax_y.log else (ey[:-1] + ey[1:]) / 2
    fig = go.Figure(
        go.Contour(
            x=cx,
            y=cy,
            z=z,
            connectgaps=True,
            colorscale=_colorscale(obj.minimize),
            colorbar=colorbar(obj.name),
            contours={"coloring": "heatmap"},
            line={"width": 0.5},
            hovertemplate=px + "=%{x}<br>" + py + "=%{y}<br>mean " + obj.name
            + "=%{z}<extra></extra>",
        )
    )  # fmt: skip
    if use_density(len(kept), max_points):
        # Where the trials are is the contour's own cells: draw only the best ones.
        top = best_of(obj, zs, feasible[both], DENSITY_BEST)
        numbers = np.fromiter(
            (t.number for t, b in zip(kept, both, strict=True) if b), dtype=np.int64
        )
        fig.add_trace(
            go.Scatter(
                x=xs[top],
                y=ys[top],
                mode="markers",
                name=f"best {len(top)}",
                showlegend=False,
                marker={"color": BEST_COLOR, "size": 5, "line": {"color": "white", "width": 0.5}},
                customdata=numbers[top],
                hovertemplate="trial %{customdata}<br>" + px + "=%{x}<br>" + py + "=%{y}<br>"
                + obj.name + "=%{text}<extra></extra>",
                text=zs[top],
            )
        )  # fmt: skip
        note = f" (mean of {len(xs):,} trials per cell, the best {len(top):,} as markers)"
    else:
        idx = downsample(len(xs), _CONTOUR_MAX_POINTS if max_points is None else max_points)
        fig.add_trace(
            scatter_trace(
                len(idx),
                x=xs[idx],
                y=ys[idx],
                mode="markers",
                name="trial",
                showlegend=False,
                marker={"color": "black", "size": 4, "opacity": 0.5},
                hoverinfo="skip",
            )
        )
        note = sampled_note(len(idx), len(xs))
    fig.update_xaxes(**ax_x.axis)
    fig.update_yaxes(**ax_y.axis)
    fig.update_layout(title=title + note)
    return finish_layout(fig)
