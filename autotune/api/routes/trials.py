"""Trials of a study: suggest, observe, report, fail, heartbeat, enqueue, list, best."""

from __future__ import annotations

from fastapi import APIRouter, status

from autotune.api.deps import LimitDep, OffsetDep, ServiceDep, StudyNameDep, TrialNumberDep
from autotune.api.errors import ERROR_RESPONSES
from autotune.api.schemas import (
    BestTrials,
    EnqueueRequest,
    FailRequest,
    ObserveRequest,
    ReportRequest,
    SuggestRequest,
)
from autotune.models import Trial, TrialState
from autotune.service import Page, QueuedConfig, ReportResult, SuggestResult

router = APIRouter(prefix="/studies/{study}", tags=["trials"], responses=ERROR_RESPONSES)


@router.post(
    "/suggest",
    response_model=SuggestResult,
    summary="Get new trials to evaluate (idempotent per client_id)",
)
def suggest(
    study: StudyNameDep, service: ServiceDep, body: SuggestRequest | None = None
) -> SuggestResult:
    body = body or SuggestRequest()
    return service.suggest(study, count=body.count, client_id=body.client_id)


@router.get("/trials", response_model=Page[Trial], summary="List trials by number")
def list_trials(
    study: StudyNameDep,
    service: ServiceDep,
    state: TrialState | None = None,
    offset: OffsetDep = 0,
    limit: LimitDep = 100,
) -> Page[Trial]:
    return service.list_trials(study, state=state, offset=offset, limit=limit)


@router.get("/trials/{number}", response_model=Trial, summary="Get a trial")
def get_trial(study: StudyNameDep, number: TrialNumberDep, service: ServiceDep) -> Trial:
    return service.get_trial(study, number)


@router.post(
    "/trials/{number}/observe",
    response_model=Trial,
    summary="Complete a trial with its metrics",
)
def observe(
    study: StudyNameDep, number: TrialNumberDep, body: ObserveRequest, service: ServiceDep
) -> Trial:
    return service.observe(study, number, body.values, metadata=body.metadata)


@router.post(
    "/trials/{number}/report",
    response_model=ReportResult,
    summary="Report an intermediate value; answers whether to stop early",
)
def report(
    study: StudyNameDep, number: TrialNumberDep, body: ReportRequest, service: ServiceDep
) -> ReportResult:
    return service.report(study, number, step=body.step, value=body.value)


@router.post("/trials/{number}/fail", response_model=Trial, summary="Mark a trial failed")
def fail(
    study: StudyNameDep,
    number: TrialNumberDep,
    service: ServiceDep,
    body: FailRequest | None = None,
) -> Trial:
    return service.fail(study, number, reason=(body or FailRequest()).reason)


@router.post(
    "/trials/{number}/heartbeat",
    response_model=Trial,
    summary="Tell the service a running trial is alive",
)
def heartbeat(study: StudyNameDep, number: TrialNumberDep, service: ServiceDep) -> Trial:
    return service.heartbeat(study, number)


@router.post(
    "/enqueue",
    response_model=QueuedConfig,
    status_code=status.HTTP_201_CREATED,
    summary="Queue a configuration to be suggested before any other",
)
def enqueue(study: StudyNameDep, body: EnqueueRequest, service: ServiceDep) -> QueuedConfig:
    return service.enqueue(study, body.params)


@router.get(
    "/best",
    response_model=BestTrials,
    summary="The best trial, or the Pareto set for several objectives",
)
def best(study: StudyNameDep, service: ServiceDep) -> BestTrials:
    return BestTrials(trials=service.best_trials(study))
