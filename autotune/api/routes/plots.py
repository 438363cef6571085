"""Figures of a study as plotly JSON: ``GET /v1/studies/{study}/plots/{kind}``.

Any front end draws the answer with ``Plotly.newPlot(el, fig.data, fig.layout)``. The trials
are read once per change of the study and each figure is computed once per read
(:mod:`autotune.plots._snapshot`); large studies are sampled server-side.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from autotune.api.deps import ServiceDep, StudyNameDep
from autotune.api.errors import ERROR_RESPONSES
from autotune.plots._registry import get_kind, make_figure, plot_kinds
from autotune.plots._snapshot import Snapshot, SnapshotCache, snapshot_cache
from autotune.projects import DEFAULT_PROJECT

router = APIRouter(prefix="/studies/{study}/plots", tags=["plots"], responses=ERROR_RESPONSES)

_MAX_POINTS_LIMIT = 100_000


_project_caches_lock = threading.Lock()


def get_snapshots(request: Request, service: ServiceDep) -> SnapshotCache:
    """The app's snapshot cache of the request's project's studies (one cache per project:
    a cache knows its studies by name, and names are unique per project only)."""
    state = request.app.state
    if service.project == DEFAULT_PROJECT:
        return snapshot_cache(state, service)  # type: ignore[arg-type]
    caches: dict[str, SnapshotCache] | None = getattr(state, "project_snapshots", None)
    if caches is None:
        with _project_caches_lock:
            caches = getattr(state, "project_snapshots", None)
            if caches is None:
                caches = state.project_snapshots = {}
    cache = caches.get(service.project)
    if cache is None:
        with _project_caches_lock:
            cache = caches.setdefault(service.project, SnapshotCache(service))  # type: ignore[arg-type]
    return cache


SnapshotsDep = Annotated[SnapshotCache, Depends(get_snapshots)]


class PlotKinds(BaseModel):
    """The figures of a study."""

    kinds: list[str]
    all_kinds: list[str]
    titles: dict[str, str]


@router.get("", response_model=PlotKinds, summary="The plot kinds that apply to the study")
def list_kinds(study: StudyNameDep, snapshots: SnapshotsDep) -> PlotKinds:
    info = snapshots.get(study).study
    every = plot_kinds()
    return PlotKinds(
        kinds=plot_kinds(info), all_kinds=every, titles={k: get_kind(k).title for k in every}
    )


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


@router.get(
    "/{kind}",
    summary="A figure of the study as plotly JSON",
    response_class=Response,
    responses={
        200: {
            "description": "A plotly figure: {data: [...], layout: {...}}.",
            "content": {"application/json": {}},
        }
    },
)
def get_plot(
    study: StudyNameDep,
    kind: str,
    snapshots: SnapshotsDep,
    objective: Annotated[str | None, Query(description="Objective to plot.")] = None,
    params: Annotated[
        list[str] | None, Query(description="Parameters (repeat, or comma-separated).")
    ] = None,
    x: Annotated[str | None, Query(description="contour: the parameter across.")] = None,
    y: Annotated[str | None, Query(description="contour: the parameter up.")] = None,
    objectives: Annotated[
        list[str] | None, Query(description="pareto_front: two or three objectives.")
    ] = None,
    max_points: Annotated[
        int | None, Query(ge=1, le=_MAX_POINTS_LIMIT, description="Sample size cap.")
    ] = None,
    max_curves: Annotated[
        int | None, Query(ge=1, le=_MAX_POINTS_LIMIT, description="Learning curves cap.")
    ] = None,
) -> Response:
    get_kind(kind)  # an unknown kind is a 422 listing the allowed ones, before any read
    given: dict[str, Any] = {
        "objective": objective,
        "params": _split(params),
        "x": x,
        "y": y,
        "objectives": _split(objectives),
        "max_points": max_points,
        "max_curves": max_curves,
    }
    options = {k: v for k, v in given.items() if v is not None}
    body = figure_json(snapshots.get(study), kind, options)
    return Response(content=body, media_type="application/json")


def figure_json(snap: Snapshot, kind: str, options: dict[str, Any]) -> str:
    """The figure's JSON text, computed once per snapshot and options."""
    key = ("plot", kind, tuple(sorted((k, str(v)) for k, v in options.items())))
    return snap.memo(key, lambda: make_figure(kind, snap.study, snap.trials, **options).to_json())
