"""Optimization history (values by trial number, best so far) and the empirical distribution
function of the objective (Optuna's ``plot_edf``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from autotune.models import Study, Trial
from autotune.plots._common import (
    BEST_COLOR,
    DEFAULT_MAX_POINTS,
    INFEASIBLE_COLOR,
    STATE_COLORS,
    Objective,
    best_indices,
    completed_values,
    downsample,
    empty_figure,
    finish_layout,
    objective_of,
    sampled_note,
    scatter_trace,
)
from autotune.plots._density import (
    DENSITY_BEST,
    best_of,
    counts_2d,
    density_colorbar,
    density_note,
    density_trace,
    use_density,
    value_edges,
)
from autotune.plots._registry import register

__all__ = ["plot_history", "plot_edf"]

# An EDF is a step function: this many steps draw it smoothly at any size.
_EDF_POINTS = 1000
# Cells of the history's density across the trial numbers (its values get DENSITY_BINS).
_HISTORY_X_BINS = 100


@register("history", title="Optimization history")
def plot_history(
    study: Study,
    trials: Sequence[Trial],
    *,
    objective: str | None = None,
    max_points: int | None = None,
) -> go.Figure:
    """Each completed trial's value by trial number, and the best value so far.

    Args:
        study: the study (objectives, directions, constraints).
        trials: its trials, any states (only completed ones are drawn).
        objective: which objective (default: the first).
        max_points: at most this many trial markers (the best always among them). By default
            every trial up to 2,000 completed ones; past that a density of all of them (counts
            per cell, a heatmap) with the best 100 as markers.
    """
    obj = objective_of(study, objective)
    title = f"Optimization history of {obj.name}"
    kept, y, feasible = completed_values(study, trials, obj.name)
    if len(kept) == 0:
        return empty_figure(title, "No completed trials yet")
    x = np.fromiter((t.number for t in kept), dtype=np.int64, count=len(kept))
    # Best so far over feasible trials only; infeasible ones never become "best".
    ranked = np.where(feasible, y, np.inf if obj.minimize else -np.inf)
    best = obj.running_best(ranked)
    improved = np.flatnonzero(np.r_[True, best[1:] != best[:-1]] & np.isfinite(best))
    fig = go.Figure()
    if use_density(len(kept), max_points):
        return _history_density(fig, obj, title, x, y, feasible, improved, best)
    idx = downsample(
        len(kept),
        DEFAULT_MAX_POINTS if max_points is None else max_points,
        keep=np.union1d(improved, best_indices(obj, y)),
    )
    feas_idx = idx[feasible[idx]]
    fig.add_trace(
        scatter_trace(
            len(feas_idx),
            x=x[feas_idx],
            y=y[feas_idx],
            mode="markers",
            name="trial",
            marker={"color": STATE_COLORS["completed"], "size": 6, "opacity": 0.7},
            hovertemplate="trial %{x}<br>" + obj.name + "=%{y}<extra></extra>",
        )
    )
    infeas_idx = idx[~feasible[idx]]
    if len(infeas_idx):
        fig.add_trace(
            scatter_trace(
                len(infeas_idx),
                x=x[infeas_idx],
                y=y[infeas_idx],
                mode="markers",
                name="infeasible",
                marker={"color": INFEASIBLE_COLOR, "size": 6},
            )
        )
    _best_line(fig, x, best, improved)
    fig.update_layout(
        title=title + sampled_note(len(idx), len(kept)),
        xaxis_title="trial",
        yaxis_title=obj.name,
    )
    return finish_layout(fig)


def _best_line(fig: go.Figure, x: np.ndarray, best: np.ndarray, improved: np.ndarray) -> None:
    if len(improved):
        # The step line only changes where a trial improved on the best: draw those points.
        bx = np.r_[x[improved], x[-1]]
        by = np.r_[best[improved], best[-1]]
        fig.add_trace(
            go.Scatter(
                x=bx,
                y=by,
                mode="lines",
                line={"color": BEST_COLOR, "shape": "hv", "width": 2},
                name="best so far",
            )
        )


def _history_density(
    fig: go.Figure,
    obj: Objective,
    title: str,
    x: np.ndarray,
    y: np.ndarray,
    feasible: np.ndarray,
    improved: np.ndarray,
    best: np.ndarray,
) -> go.Figure:
    """Every completed trial as counts per cell of (trial number, value), the best
    ``DENSITY_BEST`` feasible ones as markers, and the best so far."""
    ex = value_edges(x.astype(float), _HISTORY_X_BINS)
    ey = value_edges(y)
    fig.add_trace(
        density_trace(
            ex,
            ey,
            counts_2d(x, y, ex, ey),
            xlabel="trials",
            ylabel=obj.name,
            name="density",
            **density_colorbar(),
        )
    )
    top = best_of(obj, y, feasible, DENSITY_BEST)
    fig.add_trace(
        go.Scatter(
            x=x[top],
            y=y[top],
            mode="markers",
            name=f"best {len(top)}",
            marker={"color": BEST_COLOR, "size": 6, "opacity": 0.8},
            hovertemplate="trial %{x}<br>" + obj.name + "=%{y}<extra></extra>",
        )
    )
    _best_line(fig, x, best, improved)
    fig.update_layout(
        title=title + density_note(len(x), len(top)), xaxis_title="trial", yaxis_title=obj.name
    )
    return finish_layout(fig)


@register("edf", title="Empirical distribution of the objective")
def plot_edf(study: Study, trials: Sequence[Trial], *, objective: str | None = None) -> go.Figure:
    """The fraction of completed trials whose value is at most x (Optuna's ``plot_edf``).

    Args:
        study: the study.
        trials: its trials (completed ones are counted).
        objective: which objective (default: the first).
    """
    obj = objective_of(study, objective)
    title = f"Empirical distribution of {obj.name}"
    _, y, _ = completed_values(study, trials, obj.name)
    if len(y) == 0:
        return empty_figure(title, "No completed trials yet")
    ys = np.sort(y)
    frac = np.arange(1, len(ys) + 1) / len(ys)
    if len(ys) > _EDF_POINTS:
        pick = np.unique(np.linspace(0, len(ys) - 1, _EDF_POINTS).astype(int))
        ys, frac = ys[pick], frac[pick]
    fig = go.Figure(
        go.Scatter(
            x=ys,
            y=frac,
            mode="lines",
            line={"shape": "hv", "color": STATE_COLORS["completed"]},
            name=obj.name,
        )
    )
    fig.update_layout(
        title=f"{title} ({len(y):,} trials)",
        xaxis_title=obj.name,
        yaxis={"title": {"text": "fraction of trials"}, "range": [0, 1.02]},
    )
    return finish_layout(fig)
