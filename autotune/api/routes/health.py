"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

import autotune
from autotune.api.deps import ServiceDep
from autotune.api.schemas import Health
from autotune.errors import AutotuneError, UnavailableError

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    summary="Check that the server and its database answer",
    responses={503: {"description": "The database is unreachable."}},
)
def health(service: ServiceDep) -> Health:
    try:
        service.list_studies(limit=1)
    except AutotuneError:
        raise
    except Exception as e:  # any driver error means "not ready"
        raise UnavailableError("database unreachable", details={"reason": type(e).__name__}) from e
    return Health(version=autotune.__version__)
