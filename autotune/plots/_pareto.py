"""The Pareto front of a study with several objectives."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from autotune.errors import ValidationError
from autotune.models import Direction, Study, Trial, TrialState
from autotune.plots._common import (
    BEST_COLOR,
    DEFAULT_MAX_POINTS,
    INFEASIBLE_COLOR,
    STATE_COLORS,
    downsample,
    empty_figure,
    finish_layout,
    sampled_note,
    scatter_trace,
)
from autotune.plots._registry import register

__all__ = ["plot_pareto_front", "pareto_mask"]


def pareto_mask(y: np.ndarray) -> np.ndarray:
    """(n,) booleans: which rows of ``y`` (n, k), all minimised, no other row dominates."""
    n = len(y)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if y.shape[1] == 2:
        # Sorted by the first objective (ties by the second), a point is on the front when its
        # second value is below every earlier point's.
        order = np.lexsort((y[:, 1], y[:, 0]))
        y1 = y[order, 1]
        prev_min = np.r_[np.inf, np.minimum.accumulate(y1)[:-1]]
        on = y1 < prev_min
        # An exact duplicate of a front point is not dominated either.
        dup = np.r_[False, np.all(y[order][1:] == y[order][:-1], axis=1)]
        for i in range(1, n):
            if dup[i] and on[i - 1]:
                on[i] = True
        mask[order[on]] = True
        return mask
    # In lexicographic order a point can only be dominated by one before it, and if by any
    # then by one already on the front.
    order = np.lexsort(y.T[::-1])
    front = np.empty_like(y)  # (n_front, k), filled in order
    m = 0
    for i in order:
        f = front[:m]
        if not np.any(np.all(f <= y[i], axis=1) & np.any(f < y[i], axis=1)):
            front[m] = y[i]
            m += 1
            mask[i] = True
    return mask


@register("pareto_front", title="Pareto front", applies=lambda s: len(s.objectives) >= 2)
def plot_pareto_front(
    study: Study,
    trials: Sequence[Trial],
    *,
    objectives: Sequence[str] | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> go.Figure:
    """Completed trials in objective space (two or three objectives), the front highlighted.

    Args:
        study: a study with several objectives.
        trials: its trials.
        objectives: which two or three objectives (default: the first two).
        max_points: at most this many dominated trials (the front is always drawn whole).

    Raises:
        ValidationError: fewer than two objectives, or an unknown objective.
    """
    all_names = list(study.objectives)
    if len(all_names) < 2:
        raise ValidationError(
            f"a Pareto front needs several objectives; study {study.name!r} has one "
            f"({all_names[0]}): use the history plot",
            field="kind",
        )
    names = list(objectives) if objectives is not None else all_names[:2]
    bad = [n for n in names if n not in study.objectives]
    if bad or not 2 <= len(names) <= 3 or len(set(names)) != len(names):
        raise ValidationError(
            f"objectives must be two or three distinct names of {all_names}, got {names}",
            field="objectives",
            details={"allowed": all_names},
        )
    title = "Pareto front of " + " and ".join(names)
    constraints = study.constraint_objects()
    kept = [
        t
        for t in trials
        if t.state == TrialState.COMPLETED
        and t.values is not None
        and all(n in t.values for n in all_names)
    ]
    if not kept:
        return empty_figure(title, "No completed trials yet")
    y = np.array([[t.values[n] for n in names] for t in kept], dtype=float)  # type: ignore[index]
    numbers = np.fromiter((t.number for t in kept), dtype=np.int64, count=len(kept))
    feasible = np.array([t.is_feasible(constraints) for t in kept], dtype=bool)
    # The front is over every objective of the study, as best_trials is.
    signs = np.array(
        [1.0 if study.objectives[n] == Direction.MINIMIZE else -1.0 for n in all_names]
    )
    full = np.array([[t.values[n] for n in all_names] for t in kept], dtype=float)  # type: ignore[index]
    on_front = np.zeros(len(kept), dtype=bool)
    fidx = np.flatnonzero(feasible)
    on_front[fidx[pareto_mask(full[fidx] * signs)]] = True
    rest = np.flatnonzero(~on_front)
    shown_rest = rest[downsample(len(rest), max_points)]
    fig = go.Figure()
    groups = [
        ("trial", shown_rest[feasible[shown_rest]], STATE_COLORS["completed"], 5),
        ("infeasible", shown_rest[~feasible[shown_rest]], INFEASIBLE_COLOR, 5),
        ("Pareto front", np.flatnonzero(on_front), BEST_COLOR, 8),
    ]
    for label, idx, color, size in groups:
        if len(idx) == 0:
            continue
        hover = "trial %{customdata}<br>" + "<br>".join(
            f"{n}=%{{{axis}}}" for n, axis in zip(names, "xyz", strict=False)
        )
        common = {
            "mode": "markers",
            "name": label,
            "customdata": numbers[idx],
            "marker": {"color": color, "size": size if len(names) == 2 else size / 2},
            "hovertemplate": hover + "<extra></extra>",
        }
        if len(names) == 3:
            fig.add_trace(go.Scatter3d(x=y[idx, 0], y=y[idx, 1], z=y[idx, 2], **common))
        else:
            fig.add_trace(scatter_trace(len(idx), x=y[idx, 0], y=y[idx, 1], **common))
    shown = len(shown_rest) + int(on_front.sum())
    fig.update_layout(title=title + sampled_note(shown, len(kept)))
    if len(names) == 3:
        fig.update_layout(
            scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]}
        )
    else:
        fig.update_layout(xaxis_title=names[0], yaxis_title=names[1])
    return finish_layout(fig)
