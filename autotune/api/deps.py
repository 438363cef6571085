"""Named FastAPI dependencies shared by the routers (the full-stack template's ``deps.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from autotune.errors import NotFoundError
from autotune.models import STUDY_NAME_PATTERN
from autotune.service import StudyService

__all__ = [
    "ServiceDep",
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


def get_service(request: Request) -> StudyService:
    """The process-wide service built by ``create_app``."""
    return request.app.state.service


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


ServiceDep = Annotated[StudyService, Depends(get_service)]
StudyNameDep = Annotated[str, Depends(study_name)]
TrialNumberDep = Annotated[int, Path(ge=0, description="Trial number within the study.")]
OffsetDep = Annotated[int, Query(ge=0, le=MAX_INT64, description="Items to skip.")]
LimitDep = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
