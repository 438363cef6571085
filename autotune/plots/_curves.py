"""Trials over time: learning curves (intermediate values) and the timeline per worker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import plotly.graph_objects as go

from autotune.models import Study, Trial, TrialState
from autotune.plots._common import (
    STATE_COLORS,
    downsample,
    empty_figure,
    finish_layout,
    objective_of,
    sampled_note,
    scatter_trace,
)
from autotune.plots._registry import register

__all__ = ["plot_intermediate_values", "plot_timeline"]

# Learning curves drawn at most; a sample beyond (the best finishers always among them).
_MAX_CURVES = 300
_MAX_TIMELINE_TRIALS = 2000
_NO_CLIENT = "(no client id)"
# The timeline's time unit: the first whose span is at most _MAX_UNITS of it.
_TIME_UNITS = (("seconds", 1.0), ("minutes", 60.0), ("hours", 3600.0), ("days", 86400.0))
_MAX_UNITS = 120
# A bar's half height in rows (workers or trials): bars of neighbouring rows stay apart.
_BAR_HALF_HEIGHT = 0.4


def _curve_xy(trials: Sequence[Trial]) -> tuple[np.ndarray, np.ndarray]:
    """Every curve in one x/y pair, curves separated by ``nan`` (one trace draws them all)."""
    n = sum(len(t.intermediate) + 1 for t in trials)
    xs = np.full(n, np.nan)  # (n_points + n_curves,)
    ys = np.full(n, np.nan)
    i = 0
    for t in trials:
        for m in t.intermediate:
            xs[i], ys[i] = m.step, m.value
            i += 1
        i += 1
    return xs, ys


@register("intermediate_values", title="Intermediate values")
def plot_intermediate_values(
    study: Study, trials: Sequence[Trial], *, max_curves: int = _MAX_CURVES
) -> go.Figure:
    """The reported values of each trial by step, coloured by state; pruned trials end in a
    cross where the stopper stopped them.

    Values are of the study's primary objective (what ``report`` records).

    Args:
        study: the study.
        trials: its trials (those that reported).
        max_curves: at most this many curves (the best final values always among them).
    """
    obj = objective_of(study, None)
    title = f"Intermediate values of {obj.name}"
    reported = [t for t in trials if t.intermediate]
    if not reported:
        return empty_figure(title, "No trial has reported intermediate values")
    last = np.array([t.intermediate[-1].value for t in reported], dtype=float)
    keep = np.argsort(obj.rank_key(last), kind="stable")[: max(1, max_curves // 10)]
    idx = downsample(len(reported), max_curves, keep=keep)
    shown = [reported[i] for i in idx]
    fig = go.Figure()
    for state in (TrialState.COMPLETED, TrialState.RUNNING, TrialState.FAILED,
                  TrialState.ABANDONED, TrialState.PRUNED):  # fmt: skip
        group = [t for t in shown if t.state == state]
        if not group:
            continue
        xs, ys = _curve_xy(group)
        fig.add_trace(
            scatter_trace(
                len(xs),
                x=xs,
                y=ys,
                mode="lines+markers" if len(xs) < 500 else "lines",
                name=f"{state.value} ({len(group)})",
                line={"color": STATE_COLORS[state.value], "width": 1},
                marker={"size": 3},
                opacity=0.7,
            )
        )
    pruned = [t for t in shown if t.state == TrialState.PRUNED]
    if pruned:
        fig.add_trace(
            go.Scatter(
                x=[t.intermediate[-1].step for t in pruned],
                y=[t.intermediate[-1].value for t in pruned],
                mode="markers",
                name="pruned here",
                marker={"symbol": "x", "size": 9, "color": STATE_COLORS["pruned"]},
                customdata=[t.number for t in pruned],
                hovertemplate="trial %{customdata} pruned at step %{x}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title + sampled_note(len(shown), len(reported)),
        xaxis_title="step",
        yaxis_title=obj.name,
    )
    return finish_layout(fig)


@register("timeline", title="Timeline of trials")
def plot_timeline(
    study: Study,
    trials: Sequence[Trial],
    *,
    now: datetime | None = None,
    max_points: int = _MAX_TIMELINE_TRIALS,
) -> go.Figure:
    """Each trial as a bar from its start to its end, one row per worker (``client_id``),
    coloured by state; running trials end at ``now``. Time runs from the first trial's start
    (in seconds, minutes, hours or days, whichever fits the span).

    Without client ids the rows are trial numbers instead.

    Args:
        study: the study.
        trials: its trials.
        now: the end of running trials (default: the current time).
        max_points: at most this many trials (a sample of them beyond).
    """
    title = "Timeline of trials"
    dated = [t for t in trials if t.created_at is not None]
    if not dated:
        return empty_figure(title, "No trials yet")
    now = now or datetime.now(UTC)
    idx = downsample(len(dated), max_points)
    shown = [dated[i] for i in idx]
    by_client = any(t.client_id for t in shown)
    if by_client:
        lanes = sorted({t.client_id or _NO_CLIENT for t in shown})
        lane_of = {name: i for i, name in enumerate(lanes)}
        half = _BAR_HALF_HEIGHT
    else:
        # One row per trial; in a sample the rows drawn are further apart, the bars as tall.
        numbers = [t.number for t in shown]
        half = _BAR_HALF_HEIGHT * max(1.0, (max(numbers) - min(numbers) + 1) / len(shown))
    # Time since the first trial began, in a unit fit for the span, on a linear axis: plotly
    # converts every value on a date axis one by one (most of this figure's drawing time).
    t0 = min(t.created_at for t in shown if t.created_at is not None)
    ends = [t.completed_at or t.heartbeat_at or t.created_at for t in shown]
    span_s = max([(now - t0).total_seconds(), *((e - t0).total_seconds() for e in ends if e)])
    unit, unit_s = next((u for u in _TIME_UNITS if span_s <= u[1] * _MAX_UNITS), _TIME_UNITS[-1])
    fig = go.Figure()
    for state in TrialState:
        group = [t for t in shown if t.state == state]
        if not group:
            continue
        # Each bar a filled rectangle (five corners and a gap) of one trace: plotly fills all
        # of a trace's shapes with one SVG path, where lines would cost a path per bar.
        xs = np.full((len(group), 6), np.nan)  # (n_bars, 6)
        ys = np.full((len(group), 6), np.nan)
        for i, t in enumerate(group):
            end = t.completed_at or (now if t.state == TrialState.RUNNING else t.heartbeat_at)
            assert t.created_at is not None
            start = (t.created_at - t0).total_seconds() / unit_s
            stop = ((end or t.created_at) - t0).total_seconds() / unit_s
            row = lane_of[t.client_id or _NO_CLIENT] if by_client else t.number
            xs[i, :5] = (start, stop, stop, start, start)
            ys[i, :5] = (row - half, row - half, row + half, row + half, row - half)
        fig.add_trace(
            # Sized by its bars, not its points: a sampled timeline stays SVG as the other
            # sampled figures do.
            scatter_trace(
                len(group),
                x=xs.ravel(),
                y=ys.ravel(),
                mode="none",
                fill="toself",
                fillcolor=STATE_COLORS[state.value],
                hoveron="fills",
                name=f"{state.value} ({len(group)})",
            )
        )
    yaxis: dict = {"title": {"text": "worker" if by_client else "trial"}, "type": "linear"}
    if by_client:
        yaxis.update(tickvals=list(range(len(lanes))), ticktext=lanes,
                     range=[-0.6, len(lanes) - 0.4])  # fmt: skip
    fig.update_layout(
        title=title + sampled_note(len(shown), len(dated)),
        xaxis={"title": {"text": f"{unit} since {t0.isoformat(timespec='seconds')}"}},
        yaxis=yaxis,
    )
    return finish_layout(fig)
