"""What every figure shares: picking an objective, reading trials into arrays, downsampling,
parameter axes, colours and the empty figure.

Large studies are drawn from a sample: scatter figures keep at most ``max_points`` points (the
best ones always, a seeded uniform sample of the rest) and switch to WebGL traces past
``WEBGL_THRESHOLD`` points, so a 10,000-trial study draws as fast as a 1,000-trial one. By
default the history and slice figures show a density instead of a sample past
``DENSITY_THRESHOLD`` completed trials (:mod:`autotune.plots._density`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from autotune.errors import ValidationError
from autotune.models import Direction, Study, Trial, TrialState
from autotune.space import Categorical, Float, Int

__all__ = [
    "DEFAULT_MAX_POINTS",
    "WEBGL_THRESHOLD",
    "STATE_COLORS",
    "Objective",
    "objective_of",
    "completed_values",
    "downsample",
    "scatter_trace",
    "empty_figure",
    "ParamAxis",
    "param_axis",
    "check_params",
    "colorbar",
    "finish_layout",
    "TEMPLATE",
]

# Past this many points a scatter figure shows a sample: SVG draws two thousand points in a
# tenth of a second, and more points than pixels add nothing a reader can see.
DEFAULT_MAX_POINTS = 2000
# SVG up to here, WebGL (scattergl) beyond, i.e. only when a caller asks for more points than
# the default sample. A WebGL context costs a second or more to start where there is no GPU
# (software rendering: headless and remote browsers) and browsers allow only a few at once,
# while a sampled SVG figure draws in a fraction of that anywhere.
WEBGL_THRESHOLD = 5000
# Trials whose value is in the best fraction are always kept by the downsampler.
_KEEP_BEST_FRACTION = 0.05
_SAMPLE_SEED = 0

STATE_COLORS = {
    TrialState.COMPLETED.value: "#1f77b4",
    TrialState.PRUNED.value: "#ff7f0e",
    TrialState.FAILED.value: "#d62728",
    TrialState.RUNNING.value: "#2ca02c",
    TrialState.ABANDONED.value: "#7f7f7f",
}
BEST_COLOR = "#d62728"
INFEASIBLE_COLOR = "#bbbbbb"


@dataclass(frozen=True)
class Objective:
    """One objective of a study: its metric name and direction."""

    name: str
    minimize: bool

    def best_index(self, y: np.ndarray) -> int:
        return int(np.argmin(y) if self.minimize else np.argmax(y))

    def running_best(self, y: np.ndarray) -> np.ndarray:
        return np.minimum.accumulate(y) if self.minimize else np.maximum.accumulate(y)

    def rank_key(self, y: np.ndarray) -> np.ndarray:
        """Smaller is better, whatever the direction."""
        return y if self.minimize else -y


def objective_of(study: Study, objective: str | None) -> Objective:
    """The named objective (default: the study's first, its primary one).

    Raises:
        ValidationError: ``objective`` is not one of the study's objectives.
    """
    names = list(study.objectives)
    name = names[0] if objective is None else objective
    if name not in study.objectives:
        raise ValidationError(
            f"unknown objective {objective!r}: this study's objectives are {names}",
            field="objective",
            details={"allowed": names},
        )
    return Objective(name=name, minimize=study.objectives[name] == Direction.MINIMIZE)


def completed_values(
    study: Study, trials: Sequence[Trial], name: str
) -> tuple[list[Trial], np.ndarray, np.ndarray]:
    """Completed trials that have metric ``name`` by number, their values (n,) and
    feasibility (n,)."""
    constraints = study.constraint_objects()
    kept = sorted(
        (
            t
            for t in trials
            if t.state == TrialState.COMPLETED and t.values is not None and name in t.values
        ),
        key=lambda t: t.number,
    )
    y = np.fromiter((t.values[name] for t in kept), dtype=float, count=len(kept))  # type: ignore[index]
    if constraints:
        feasible = np.fromiter(
            (t.is_feasible(constraints) for t in kept), dtype=bool, count=len(kept)
        )
    else:
        feasible = np.ones(len(kept), dtype=bool)
    return kept, y, feasible


def downsample(
    n: int, max_points: int, *, keep: np.ndarray | Sequence[int] = (), seed: int = _SAMPLE_SEED
) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items: every index in ``keep`` (up to
    the budget) and a seeded uniform sample of the rest. All of them when ``n <= max_points``."""
    if max_points < 1:
        raise ValidationError(f"max_points must be >= 1, got {max_points}", field="max_points")
    if n <= max_points:
        return np.arange(n)
    keep_arr = np.unique(np.asarray(keep, dtype=int))[:max_points]
    rest = np.setdiff1d(np.arange(n), keep_arr, assume_unique=True)
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=max_points - len(keep_arr), replace=False)
    return np.sort(np.concatenate([keep_arr, extra]))


def best_indices(objective: Objective, y: np.ndarray) -> np.ndarray:
    """Indices of the best ``_KEEP_BEST_FRACTION`` of ``y`` (what a sample must not lose)."""
    k = max(1, int(len(y) * _KEEP_BEST_FRACTION))
    if len(y) == 0:
        return np.zeros(0, dtype=int)
    return np.argsort(objective.rank_key(y), kind="stable")[:k]


def scatter_trace(n_points: int, **kwargs: Any) -> go.Scatter | go.Scattergl:
    """A scatter trace, WebGL past ``WEBGL_THRESHOLD`` points."""
    cls = go.Scattergl if n_points > WEBGL_THRESHOLD else go.Scatter
    return cls(**kwargs)


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure with nothing to draw yet, saying why."""
    fig = go.Figure()
    fig.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 14},
            }
        ],
    )
    return finish_layout(fig)


# A small template of our own: plotly's named templates are deep-copied into every figure,
# which costs more than drawing the data of a large study.
_GRID = "#e5ecf6"
# Tick labels may overflow the figure ("allow"): plotly's default ("hide past div") measures
# every label of an axis again for each label it places, a forced layout each time, which was a
# sixth of a study page's drawing; with automargin no label lies outside the figure anyway.
_TICKS = {"ticklabeloverflow": "allow"}
_AXIS = {
    "gridcolor": _GRID,
    "zerolinecolor": _GRID,
    "linecolor": "#b0b8c4",
    "automargin": True,
    **_TICKS,
}
TEMPLATE: dict[str, Any] = {
    "layout": {
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"],
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "hovermode": "closest",
        "title": {"x": 0.02, "font": {"size": 15}},
    }
}


def colorbar(title: str, **extra: Any) -> dict[str, Any]:
    """A colour bar titled ``title``, its ticks placed as the axes' are (``_TICKS``)."""
    return {"title": {"text": title}, **_TICKS, **extra}


def finish_layout(fig: go.Figure) -> go.Figure:
    """The look every figure shares."""
    # Assigned, not passed to update_layout: that path costs ~50 ms per figure for a template.
    fig.layout.template = TEMPLATE
    fig.update_layout(
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1, "xanchor": "right"},
    )
    return fig


def sampled_note(shown: int, total: int) -> str:
    return f" (showing {shown:,} of {total:,})" if shown < total else ""


@dataclass(frozen=True)
class ParamAxis:
    """How one parameter is drawn: numeric positions per trial and the axis settings.

    Categorical parameters sit at their choice's index, labelled with the choice; log-scale
    parameters use a log axis. Trials where the parameter is inactive get ``nan``.
    """

    name: str
    positions: np.ndarray  # (n_trials,) float, nan where inactive
    axis: dict[str, Any]
    categorical: bool
    log: bool


def param_axis(study: Study, name: str, trials: Sequence[Trial]) -> ParamAxis:
    param = study.search_space()[name]
    raw = [t.params.get(name) for t in trials]
    if isinstance(param, Categorical):
        choices = list(param.choices)
        index = {_choice_key(c): i for i, c in enumerate(choices)}
        pos = np.array(
            [math.nan if v is None else index.get(_choice_key(v), math.nan) for v in raw],
            dtype=float,
        )
        axis = {
            "title": {"text": name},
            "tickvals": list(range(len(choices))),
            "ticktext": [str(c) for c in choices],
            "range": [-0.5, len(choices) - 0.5],
        }
        return ParamAxis(name, pos, axis, categorical=True, log=False)
    assert isinstance(param, Float | Int)
    pos = np.array([math.nan if v is None else float(v) for v in raw], dtype=float)
    axis = {"title": {"text": name}}
    if param.log:
        axis["type"] = "log"
    return ParamAxis(name, pos, axis, categorical=False, log=param.log)


def _choice_key(value: Any) -> tuple[str, Any]:
    # bool is an int in Python: keep True apart from 1, as the space does.
    return (type(value).__name__ if isinstance(value, bool) else "v", value)


def check_params(study: Study, params: Sequence[str] | None) -> list[str]:
    """The named parameters (default: all, in the space's order), each checked.

    Raises:
        ValidationError: a name that is not a parameter of the study.
    """
    names = list(study.space)
    if params is None:
        return names
    for p in params:
        if p not in study.space:
            raise ValidationError(
                f"unknown parameter {p!r}: this study's parameters are {names}",
                field="params",
                details={"allowed": names},
            )
    return list(dict.fromkeys(params))
