"""The dashboard's own JSON: study summaries, the paged trial table, and a study page in one
answer (summary, first table page and every figure), so a page load is one round trip the
browser can start before it has parsed plotly.js. Trials and models come from their own routes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.routing import Match

from autotune.api.deps import LimitDep, OffsetDep, ServiceDep, StudyNameDep
from autotune.api.errors import ERROR_RESPONSES
from autotune.api.routes.plots import SnapshotsDep, figure_json
from autotune.dashboard._table import table_page, trial_row
from autotune.errors import AutotuneError
from autotune.models import Study, Trial, TrialState
from autotune.plots._registry import get_kind, plot_kinds
from autotune.plots._snapshot import Snapshot

router = APIRouter(prefix="/dashboard/api", tags=["dashboard"], responses=ERROR_RESPONSES)

# Optional APIs the pages show when the app has them (other packages mount them).
_CAPABILITIES = {
    "models": "/v1/models",
    "serving_status": "/v1/serving/status",
    "serving_metrics": "/metrics",
    "feature_groups": "/v1/feature-groups",
}


def _has_get(app: Any, path: str) -> bool:
    """Whether a GET of ``path`` reaches a route of ``app`` (asked of the routes themselves:
    included routers need not expose their routes' paths)."""
    scope = {
        "type": "http",
        "path": path,
        "method": "GET",
        "root_path": "",
        "path_params": {},
        "headers": [],
        "query_string": b"",
    }
    return any(r.matches(scope)[0] == Match.FULL for r in app.routes)


@router.get("/capabilities", summary="Which optional APIs this server has")
def capabilities(request: Request) -> dict[str, bool]:
    return {name: _has_get(request.app, path) for name, path in _CAPABILITIES.items()}


def _best(study: Study, best: list[Trial]) -> dict[str, Any]:
    if not best:
        return {"values": None, "number": None, "n_pareto": 0}
    if len(study.objectives) == 1:
        return {"values": best[0].values, "number": best[0].number, "n_pareto": 1}
    return {"values": None, "number": None, "n_pareto": len(best)}


def _last_update(study: Study, last: Trial | None) -> datetime:
    times = [study.updated_at]
    if last is not None:
        times += [t for t in (last.created_at, last.completed_at, last.heartbeat_at) if t]
    return max(times)


def _summary(service: Any, study: Study) -> dict[str, Any]:
    last = None
    if study.n_trials:
        page = service.list_trials(study.name, offset=study.n_trials - 1, limit=1)
        last = page.items[0] if page.items else None
    return {
        "name": study.name,
        "state": study.state.value,
        "n_trials": study.n_trials,
        "objectives": {k: v.value for k, v in study.objectives.items()},
        "best": _best(study, service.best_trials(study.name)),
        "created_at": study.created_at,
        "last_update": _last_update(study, last),
    }


@router.get("/studies", summary="Studies with their state, trial count, best value, last update")
def studies(service: ServiceDep, offset: OffsetDep = 0, limit: LimitDep = 100) -> dict[str, Any]:
    page = service.list_studies(offset=offset, limit=limit)
    return {
        "items": [_summary(service, s) for s in page.items],
        "total": page.total,
        "offset": offset,
        "limit": limit,
    }


@router.get("/studies/{study}", summary="A study with its counts, best trials and plot kinds")
def study_summary(study: StudyNameDep, snapshots: SnapshotsDep) -> dict[str, Any]:
    return _summary_of(snapshots.get(study))


def _summary_of(snap: Snapshot) -> dict[str, Any]:
    info = snap.study
    counts = {s.value: 0 for s in TrialState}
    for t in snap.trials:
        counts[t.state.value] += 1
    best = snap.memo(("best",), lambda: _best_from(info, snap.trials))
    return {
        "study": info.model_dump(mode="json"),
        "counts": counts,
        "best": best,
        "plots": [{"kind": k, "title": get_kind(k).title} for k in plot_kinds(info)],
        "version": snap.version,
    }


def _best_from(study: Study, trials: list[Trial]) -> dict[str, Any]:
    import numpy as np

    from autotune.plots._pareto import pareto_mask

    names = list(study.objectives)
    constraints = study.constraint_objects()
    done = [
        t
        for t in trials
        if t.state == TrialState.COMPLETED
        and t.values
        and all(n in t.values for n in names)
        and t.is_feasible(constraints)
    ]
    if not done:
        return _best(study, [])
    signs = np.array([1.0 if study.objectives[n].value == "minimize" else -1.0 for n in names])
    y = np.array([[t.values[n] for n in names] for t in done]) * signs  # type: ignore[index]
    if len(names) == 1:
        # Ties go to the lowest number, as the service's best_trials does.
        return _best(study, [done[int(np.argmin(y[:, 0]))]])
    return _best(study, [t for t, on in zip(done, pareto_mask(y), strict=True) if on])


@router.get("/studies/{study}/trials", summary="A page of the trial table, filtered and sorted")
def trials_table(
    study: StudyNameDep,
    snapshots: SnapshotsDep,
    offset: OffsetDep = 0,
    limit: LimitDep = 50,
    q: Annotated[str, Query(max_length=1000, description="Filter, e.g. 'lr<0.01 rbf'.")] = "",
    state: TrialState | None = None,
    sort: Annotated[str, Query(max_length=200, description="number, values.x, ...")] = "number",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> dict[str, Any]:
    return _table_of(snapshots.get(study), offset, limit, q, state, sort, order)


def _table_of(
    snap: Snapshot,
    offset: int = 0,
    limit: int = 50,
    q: str = "",
    state: TrialState | None = None,
    sort: str = "number",
    order: str = "asc",
) -> dict[str, Any]:
    rows = snap.memo(("rows",), lambda: [trial_row(t) for t in snap.trials])
    items, total = table_page(
        snap.study,
        rows,
        q=q,
        state=state.value if state else None,
        sort=sort,
        descending=order == "desc",
        offset=offset,
        limit=limit,
    )
    return {
        "items": items,
        "total": total,
        "n_trials": len(rows),
        "offset": offset,
        "limit": limit,
        "version": snap.version,
    }


@router.get(
    "/studies/{study}/page",
    summary="A study page in one answer: summary, first table page and every figure",
    response_class=Response,
)
def study_page(
    study: StudyNameDep,
    snapshots: SnapshotsDep,
    limit: LimitDep = 50,
    sort: Annotated[str, Query(max_length=200)] = "number",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> Response:
    snap = snapshots.get(study)
    summary = _summary_of(snap)
    table = _table_of(snap, 0, limit, "", None, sort, order)
    # Figures are cached as JSON text: spliced in, never parsed again.
    parts = []
    for p in summary["plots"]:
        try:
            body = figure_json(snap, p["kind"], {})
        except AutotuneError as e:
            body = json.dumps(e.to_payload())
        parts.append(f"{json.dumps(p['kind'])}:{body}")
    head = json.dumps({"summary": summary, "table": table}, default=str)
    content = head[:-1] + ',"figures":{' + ",".join(parts) + "}}"
    return Response(content=content, media_type="application/json")
