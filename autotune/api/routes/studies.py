"""Studies: create, read, list, change state, delete."""

from __future__ import annotations

from fastapi import APIRouter, status

from autotune.api.deps import LimitDep, OffsetDep, ServiceDep, StudyNameDep
from autotune.api.errors import ERROR_RESPONSES
from autotune.api.schemas import Deleted
from autotune.models import Study, StudySpec, StudyState
from autotune.service import Page

router = APIRouter(prefix="/studies", tags=["studies"], responses=ERROR_RESPONSES)


@router.post(
    "",
    response_model=Study,
    status_code=status.HTTP_201_CREATED,
    summary="Create a study",
)
def create_study(spec: StudySpec, service: ServiceDep) -> Study:
    return service.create_study(spec)


@router.get("", response_model=Page[Study], summary="List studies in creation order")
def list_studies(
    service: ServiceDep,
    state: StudyState | None = None,
    offset: OffsetDep = 0,
    limit: LimitDep = 50,
) -> Page[Study]:
    return service.list_studies(state=state, offset=offset, limit=limit)


@router.get("/{study}", response_model=Study, summary="Get a study")
def get_study(study: StudyNameDep, service: ServiceDep) -> Study:
    return service.get_study(study)


@router.delete("/{study}", response_model=Deleted, summary="Delete a study and its trials")
def delete_study(study: StudyNameDep, service: ServiceDep) -> Deleted:
    service.delete_study(study)
    return Deleted(name=study)


@router.post(
    "/{study}/pause", response_model=Study, summary="Pause a study: suggest hands out nothing"
)
def pause_study(study: StudyNameDep, service: ServiceDep) -> Study:
    return service.set_study_state(study, StudyState.PAUSED)


@router.post("/{study}/resume", response_model=Study, summary="Resume a paused study")
def resume_study(study: StudyNameDep, service: ServiceDep) -> Study:
    return service.set_study_state(study, StudyState.ACTIVE)


@router.post(
    "/{study}/complete", response_model=Study, summary="Mark a study completed (no new trials)"
)
def complete_study(study: StudyNameDep, service: ServiceDep) -> Study:
    return service.set_study_state(study, StudyState.COMPLETED)
