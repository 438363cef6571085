"""Named FastAPI dependencies shared by the routers (the full-stack template's ``deps.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Query, Request

from autotune.errors import NotFoundError
from autotune.models import STUDY_NAME_PATTERN
from autotune.projects import DEFAULT_PROJECT
from autotune.service import ProjectStudies, StudyService

if TYPE_CHECKING:
    from autotune.auth import Principal

__all__ = [
    "ServiceDep",
    "ProjectDep",
    "PrincipalDep",
    "StudyNameDep",
    "TrialNumberDep",
    "OffsetDep",
    "LimitDep",
    "MAX_INT64",
    "MAX_PAGE",
]

# Offsets end up in a 64-bit OFFSET; bounding them here turns an absurd value into a 422
# instead of a database overflow. Trial numbers are left to the service, which answers "not
# found" for any number no trial can have, as it does for the embedded client.
MAX_INT64 = 2**63 - 1
MAX_PAGE = 1000


def get_principal(request: Request) -> Principal | None:
    """The API key the request came with (``None`` with authentication off)."""
    state = request.scope.get("state")
    return state.get("principal") if state else None


def get_project(request: Request) -> str:
    """The request's project: its key's, or ``default`` with authentication off."""
    principal = get_principal(request)
    return principal.project if principal is not None else DEFAULT_PROJECT


def get_service(request: Request) -> ProjectStudies:
    """The process-wide service built by ``create_app``, seen from the request's project."""
    service: StudyService = request.app.state.service
    return ProjectStudies(service, get_project(request))


def study_name(
    study: Annotated[str, Path(description="Study name.", max_length=256)],
) -> str:
    # A name that no study can have is simply not found: the same answer the embedded client
    # gets from the service, and no odd bytes (NUL) ever reach the database.
    if not STUDY_NAME_PATTERN.match(study):
        raise NotFoundError(
            f"no study named {study!r}; list the studies to see their names",
            details={"field": "name", "study": study},
        )
    return study


ServiceDep = Annotated[ProjectStudies, Depends(get_service)]
ProjectDep = Annotated[str, Depends(get_project)]
PrincipalDep = Annotated["Principal | None", Depends(get_principal)]
StudyNameDep = Annotated[str, Depends(study_name)]
TrialNumberDep = Annotated[int, Path(ge=0, description="Trial number within the study.")]
OffsetDep = Annotated[int, Query(ge=0, le=MAX_INT64, description="Items to skip.")]
LimitDep = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
