"""Plotly figures of a study, from its trials: pure functions ``plot_x(study, trials, **options)``.

    from autotune import plots

    fig = plots.plot_history(study_info, trials)   # a plotly Figure
    fig = plots.make_figure("slice", study_info, trials, params=["lr"])

Kinds: optimization history with best so far, parallel coordinates, slice, contour of a
parameter pair, parameter importance, Pareto front, intermediate values, timeline and EDF
(:func:`plot_kinds`). The REST API serves each as figure JSON at
``GET /v1/studies/{study}/plots/{kind}`` and the client's study handle draws them
(``study.plot_history()``). Large studies are sampled (see :mod:`autotune.plots._common`);
past 2,000 completed trials the history and slice show a density of every trial with the best
as markers (:mod:`autotune.plots._density`).

plotly (and scikit-learn, for importance) are imported on first use, so importing the client
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "plot_history",
    "plot_parallel_coordinates",
    "plot_slice",
    "plot_contour",
    "plot_importance",
    "param_importances",
    "plot_pareto_front",
    "pareto_mask",
    "plot_intermediate_values",
    "plot_timeline",
    "plot_edf",
    "plot_kinds",
    "make_figure",
    "StudyPlotsMixin",
]

_WHERE = {
    "plot_history": "_history",
    "plot_edf": "_history",
    "plot_parallel_coordinates": "_parcoords",
    "plot_slice": "_params",
    "plot_contour": "_params",
    "plot_importance": "_importance",
    "param_importances": "_importance",
    "plot_pareto_front": "_pareto",
    "pareto_mask": "_pareto",
    "plot_intermediate_values": "_curves",
    "plot_timeline": "_curves",
    "plot_kinds": "_registry",
    "make_figure": "_registry",
    "StudyPlotsMixin": "_mixin",
}

if TYPE_CHECKING:
    from autotune.plots._curves import plot_intermediate_values, plot_timeline
    from autotune.plots._history import plot_edf, plot_history
    from autotune.plots._importance import param_importances, plot_importance
    from autotune.plots._mixin import StudyPlotsMixin
    from autotune.plots._params import plot_contour, plot_slice
    from autotune.plots._parcoords import plot_parallel_coordinates
    from autotune.plots._pareto import pareto_mask, plot_pareto_front
    from autotune.plots._registry import make_figure, plot_kinds


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'autotune.plots' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"autotune.plots.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
