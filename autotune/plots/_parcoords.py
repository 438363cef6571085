"""Parallel coordinates drawn as an SVG figure: one vertical axis per parameter (the objective
first), one polyline per trial across them, coloured by the objective.

Plotly's own ``parcoords`` trace is WebGL: its context costs seconds to start where there is no
GPU (headless and remote browsers, software rendering) and browsers allow only a few at once.
Here each polyline is part of an ordinary scatter trace: trials are grouped into colour bands
of the objective, each band one trace whose lines are separated by gaps, so a thousand trials
are a dozen SVG paths. Every axis is mapped onto [0, 1] and labelled with its real values
(choices on categorical axes, powers of ten on log ones); a conditional parameter that is
inactive in a trial sits on an "inactive" tick below its axis, so the trial's line stays whole.

A large study is drawn from an aggregate chosen on the server: the best trials and a sample of
the rest stratified over the objective's ranks (so the spread of values is kept); the title
says how many of how many are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale, sample_colorscale

from autotune.models import Study, Trial
from autotune.plots._common import (
    TEMPLATE,
    Objective,
    check_params,
    completed_values,
    empty_figure,
    objective_of,
    param_axis,
)
from autotune.plots._registry import register
from autotune.space import Categorical, Float, Int

__all__ = ["plot_parallel_coordinates", "select_lines"]

# SVG draws a thousand polylines in tens of milliseconds; past that the picture is a solid band.
_MAX_LINES = 1000
# Of the lines drawn, this fraction are the best trials; the rest a stratified sample.
_BEST_FRACTION = 0.25
# Colour bands of the objective: one trace each (a trace has one line colour).
_N_BANDS = 10
# Where inactive values of a conditional parameter sit, below the axis' [0, 1].
_INACTIVE_Y = -0.12
_N_TICKS = 5
# Up to this many levels an integer or categorical axis labels every level.
_MAX_LEVEL_TICKS = 12
_COLORSCALE = "Blues"
_PALEST = 0.25
_AXIS_COLOR = "#8a94a6"
_TICK_FONT = {"size": 10, "color": "#444"}


@dataclass(frozen=True)
class _Axis:
    """One vertical axis: positions in [0, 1] (``_INACTIVE_Y`` where inactive), its ticks."""

    label: str
    y: np.ndarray  # (n_lines,)
    tickvals: list[float]
    ticktext: list[str]
    has_inactive: bool


def select_lines(objective: Objective, y: np.ndarray, max_lines: int) -> tuple[np.ndarray, int]:
    """Which trials to draw: sorted indices into ``y`` and how many of them are the best.

    All of them up to ``max_lines``; beyond, the best ``_BEST_FRACTION`` of the budget and, for
    the rest, trials at evenly spaced ranks of the remaining ones, one per stratum from the
    next-best to the worst (so the sample spans the whole range of values and keeps their
    distribution). Deterministic: the same trials give the same picture on every request.
    """
    n = len(y)
    if max_lines < 1:
        from autotune.errors import ValidationError

        raise ValidationError(f"max_points must be >= 1, got {max_lines}", field="max_points")
    if n <= max_lines:
        return np.arange(n), n
    order = np.argsort(objective.rank_key(y), kind="stable")  # best first
    n_best = max(1, int(max_lines * _BEST_FRACTION))
    rest = order[n_best:]
    n_rest = max_lines - n_best
    # Evenly spaced ranks of the rest, the worst included: the objective axis spans every value.
    picks = np.linspace(0, len(rest) - 1, n_rest).round().astype(int)
    return np.sort(np.concatenate([order[:n_best], rest[picks]])), n_best


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _numeric_axis(study: Study, name: str, shown: Sequence[Trial]) -> _Axis:
    ax = param_axis(study, name, shown)
    param = study.search_space()[name]
    pos = ax.positions
    active = ~np.isnan(pos)
    if ax.categorical:
        assert isinstance(param, Categorical)
        n = len(param.choices)
        span = max(n - 1, 1)
        y = np.where(active, pos / span if n > 1 else 0.5, _INACTIVE_Y)
        labels = [str(c) for c in param.choices]
        step = max(1, math.ceil(n / _MAX_LEVEL_TICKS))
        tickvals = [i / span if n > 1 else 0.5 for i in range(0, n, step)]
        ticktext = labels[::step]
    else:
        assert isinstance(param, Float | Int)
        # The declared range (widened to any value outside it), on a log scale where declared.
        lo = min(float(param.low), float(np.min(pos[active]))) if active.any() else param.low
        hi = max(float(param.high), float(np.max(pos[active]))) if active.any() else param.high
        tf = np.log10 if ax.log else (lambda v: v)
        tlo, thi = float(tf(lo)), float(tf(hi))
        width = thi - tlo if thi > tlo else 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(active, (tf(np.where(active, pos, lo)) - tlo) / width, _INACTIVE_Y)
        if isinstance(param, Int) and not ax.log and hi - lo + 1 <= _MAX_LEVEL_TICKS:
            levels = np.arange(math.ceil(lo), math.floor(hi) + 1)
        elif ax.log:
            decades = np.arange(math.ceil(tlo - 1e-9), math.floor(thi + 1e-9) + 1)
            levels = 10.0**decades if len(decades) >= 2 else np.array([lo, hi])
        else:
            levels = np.linspace(lo, hi, _N_TICKS)
        tickvals = [float((tf(v) - tlo) / width) for v in levels]
        ticktext = [_fmt(float(v)) for v in levels]
    has_inactive = bool((~active).any())
    if has_inactive:
        tickvals, ticktext = [_INACTIVE_Y, *tickvals], ["inactive", *ticktext]
    return _Axis(name, y.astype(float), tickvals, ticktext, has_inactive)


def _objective_axis(name: str, ys: np.ndarray) -> _Axis:
    lo, hi = float(ys.min()), float(ys.max())
    width = hi - lo if hi > lo else 1.0
    levels = np.linspace(lo, hi, _N_TICKS) if hi > lo else np.array([lo])
    y = (ys - lo) / width if hi > lo else np.full(len(ys), 0.5)
    tickvals = [float((v - lo) / width) if hi > lo else 0.5 for v in levels]
    return _Axis(name, y, tickvals, [_fmt(float(v)) for v in levels], False)


def _colors(minimize: bool) -> list[list[Any]]:
    """The colour scale, worst value first: the best get the darkest colour whichever the
    direction, and the palest fifth of the scale is left out (invisible on white)."""
    full = get_colorscale(_COLORSCALE)
    stops = np.linspace(0.0, 1.0, 9)
    colors = sample_colorscale(full, list(_PALEST + (1 - _PALEST) * stops))
    if minimize:  # the scale runs from the smallest value: make that the darkest
        colors = colors[::-1]
    return [[float(s), c] for s, c in zip(stops, colors, strict=True)]


def _retraced(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every line of ``pos`` (n_lines, n_axes) as one unbroken polyline: each goes out along
    the axes and back over itself, and the next starts from there up the first axis.

    Plotly draws a trace's lines as one SVG path per unbroken run: lines separated by gaps
    cost an element each (a thousand lines, a thousand paths: most of the figure's drawing
    time), one polyline costs one. Going back over a line draws nothing new, and the steps
    between lines lie on the first axis (the objective's, the lines sorted by it), so the
    picture is the same. Returns x and y, each (n_lines * (2 * n_axes - 1),), float32 (sent as
    binary; single precision is far below a pixel).
    """
    n_lines, n_axes = pos.shape
    there = np.arange(n_axes)
    path = np.concatenate([there, there[-2::-1]])  # 0, 1, ..., n-1, n-2, ..., 0
    xs = np.tile(path, n_lines).astype(np.float32)
    yy = pos[:, path].astype(np.float32).ravel()
    return xs, yy


@register("parallel_coordinates", title="Parallel coordinates")
def plot_parallel_coordinates(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    params: Sequence[str] | None = None,
    max_points: int = _MAX_LINES,
) -> go.Figure:
    """One line per completed trial across the objective and each parameter (SVG, no WebGL).

    Lines are coloured by the objective (the best darkest) in bands of equal width, one legend
    entry each (the colour key), so a click on the legend shows or hides a range of values;
    hovering a line gives its trial's number. No markers: a thousand SVG markers cost more to
    draw than the lines.

    Args:
        study: the study.
        trials: its trials (completed ones are drawn).
        objective: which objective colours the lines (default: the first).
        params: which parameters (default: all).
        max_points: at most this many lines: the best trials and a stratified sample of the
            rest beyond (see :func:`select_lines`).
    """
    obj = objective_of(study, objective)
    names = check_params(study, params)
    title = f"Parallel coordinates of {obj.name}"
    kept, y, _ = completed_values(study, trials, obj.name)
    if len(kept) == 0:
        return empty_figure(title, "No completed trials yet")
    idx, n_best = select_lines(obj, y, max_points)
    shown = [kept[i] for i in idx]
    ys = y[idx]  # (n_lines,)
    numbers = np.fromiter((t.number for t in shown), dtype=np.int64, count=len(shown))
    axes = [_objective_axis(obj.name, ys)] + [_numeric_axis(study, n, shown) for n in names]
    n_axes = len(axes)
    pos = np.stack([a.y for a in axes], axis=1)  # (n_lines, n_axes)

    # Colour bands of equal width over the values drawn; worst drawn first, best on top.
    lo, hi = float(ys.min()), float(ys.max())
    u = (ys - lo) / (hi - lo) if hi > lo else np.zeros(len(ys))
    band = np.minimum((u * _N_BANDS).astype(int), _N_BANDS - 1)
    scale = _colors(obj.minimize)
    edges = np.linspace(lo, hi, _N_BANDS + 1)
    order = range(_N_BANDS - 1, -1, -1) if obj.minimize else range(_N_BANDS)
    traces: list[dict[str, Any]] = []
    for b in order:
        rows = np.flatnonzero(band == b)
        if len(rows) == 0:
            continue
        rows = rows[np.argsort(ys[rows], kind="stable")]
        xs, yy = _retraced(pos[rows])
        traces.append({
            "type": "scatter",
            "x": xs,
            "y": yy,
            "customdata": np.repeat(numbers[rows], 2 * n_axes - 1),
            "mode": "lines",
            "name": f"{_fmt(edges[b])}–{_fmt(edges[b + 1])} ({len(rows)})",
            "legendgroup": "bands",
            "line": {"color": sample_colorscale(scale, [(b + 0.5) / _N_BANDS])[0], "width": 1,
                     "simplify": False},  # fmt: skip
            "opacity": 0.55,
            "hovertemplate": "trial %{customdata}",  # and the band's range (trace name)
        })  # fmt: skip
    annotations = []
    for i, a in enumerate(axes):
        for v, text in zip(a.tickvals, a.ticktext, strict=True):
            annotations.append({
                "x": i, "y": v, "xref": "x", "yref": "y", "text": text, "showarrow": False,
                "xanchor": "right", "xshift": -4, "font": _TICK_FONT, "name": f"tick:{a.label}",
                "bgcolor": "rgba(255,255,255,0.75)",
            })  # fmt: skip
    shapes = [
        {
            "type": "line", "x0": i, "x1": i, "y0": _INACTIVE_Y if a.has_inactive else 0,
            "y1": 1, "xref": "x", "yref": "y", "line": {"color": _AXIS_COLOR, "width": 1.5},
            "layer": "below", "name": f"axis:{a.label}",
        }
        for i, a in enumerate(axes)
    ]  # fmt: skip
    note = (
        f" (showing {len(idx):,} of {len(kept):,}: the best {n_best:,} and a stratified sample)"
        if len(idx) < len(kept)
        else ""
    )
    layout = {
        "title": {"text": title + note},
        "xaxis": {
            "tickvals": list(range(n_axes)),
            "ticktext": [a.label for a in axes],
            "side": "top",
            "range": [-0.45, n_axes - 0.75],
            "showgrid": False,
            "zeroline": False,
            "fixedrange": True,
        },
        "yaxis": {"visible": False, "range": [_INACTIVE_Y - 0.06, 1.04], "fixedrange": True},
        "annotations": annotations,
        "shapes": shapes,
        "hovermode": "closest",
        "height": 420,
        "margin": {"l": 60, "r": 20, "t": 80, "b": 30},
        # The bands are the colour key: best at the top, a click hides or shows a band.
        "legend": {"title": {"text": obj.name}, "orientation": "v", "traceorder": "reversed",
                   "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top",
                   "font": {"size": 10}},
    }  # fmt: skip
    # One figure built at once: plotly validates it in one pass (adding traces and updating
    # the layout step by step costs several times as much).
    fig = go.Figure(data=traces, layout=layout)
    fig.layout.template = TEMPLATE
    return fig
