"""Plot methods for the client's study handle, so figures render inline in notebooks::

    study = autotune.Client().get_study("demo")
    study.plot_history()          # a plotly Figure; Jupyter draws it
    study.plot_contour(x="lr", y="depth")

The handle fetches the study and every trial on each call; plotly is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from autotune.models import Study, Trial

__all__ = ["StudyPlotsMixin"]


class StudyPlotsMixin:
    """Adds ``plot_*`` methods to a class with ``info`` (the :class:`~autotune.models.Study`)
    and ``trials()`` (every trial), as :class:`autotune.client.StudyClient` has."""

    if TYPE_CHECKING:

        @property
        def info(self) -> Study: ...

        def trials(self, state: Any = None) -> list[Trial]: ...

    def plot(self, kind: str, **options: Any) -> go.Figure:
        """The ``kind`` figure (see :func:`autotune.plots.plot_kinds`) with its options."""
        from autotune.plots._registry import make_figure

        return make_figure(kind, self.info, self.trials(), **options)

    def plot_history(self, **options: Any) -> go.Figure:
        """Values by trial and the best so far (options: ``objective``, ``max_points``)."""
        return self.plot("history", **options)

    def plot_parallel_coordinates(self, **options: Any) -> go.Figure:
        """One line per trial (options: ``objective``, ``params``, ``max_points``)."""
        return self.plot("parallel_coordinates", **options)

    def plot_slice(self, **options: Any) -> go.Figure:
        """The objective against each parameter (``objective``, ``params``, ``max_points``)."""
        return self.plot("slice", **options)

    def plot_contour(self, **options: Any) -> go.Figure:
        """The objective over two parameters (``x``, ``y``, ``objective``, ``max_points``)."""
        return self.plot("contour", **options)

    def plot_importance(self, **options: Any) -> go.Figure:
        """Parameter importance from a fitted forest (``objective``, ``params``)."""
        return self.plot("importance", **options)

    def plot_pareto_front(self, **options: Any) -> go.Figure:
        """The Pareto front of two or three objectives (``objectives``, ``max_points``)."""
        return self.plot("pareto_front", **options)

    def plot_intermediate_values(self, **options: Any) -> go.Figure:
        """Learning curves, pruned trials marked (``max_curves``)."""
        return self.plot("intermediate_values", **options)

    def plot_timeline(self, **options: Any) -> go.Figure:
        """Trials over time per worker (``now``, ``max_points``)."""
        return self.plot("timeline", **options)

    def plot_edf(self, **options: Any) -> go.Figure:
        """The empirical distribution of the objective (``objective``)."""
        return self.plot("edf", **options)
