"""StudyService: the one entry point through which studies and trials change state.

The REST API and the embedded client both call this class; it is stateless between calls (all
state is in the database), so several API processes can share one PostgreSQL database.

CONTRACT (implemented by the storage/service work; the API and client are written against it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from autotune.models import Study, StudySpec, StudyState, Trial, TrialState
from autotune.space import Params

T = TypeVar("T")

__all__ = ["StudyService", "Page", "ReportResult", "SuggestResult", "QueuedConfig"]


class Page(BaseModel, Generic[T]):
    """One page of a listing."""

    items: list[T]
    total: int
    offset: int
    limit: int


class SuggestResult(BaseModel):
    trials: list[Trial]
    study_state: StudyState
    designer: str | None = None


class ReportResult(BaseModel):
    should_stop: bool


class QueuedConfig(BaseModel):
    id: int
    params: Params


class StudyService:
    """Create studies, hand out and complete trials. Thread-safe; one per process is enough.

    Args:
        db_url: SQLAlchemy URL. ``None`` -> ``AUTOTUNE_DB`` or ``sqlite:///autotune.db``.
        clock: returns the current UTC time (tests move it forward to expire heartbeats).
        migrate: apply Alembic migrations on start (several processes may start at once).
    """

    def __init__(
        self,
        db_url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        migrate: bool = True,
    ) -> None:
        raise NotImplementedError

    def close(self) -> None: ...

    # studies
    def create_study(self, spec: StudySpec | Mapping[str, Any]) -> Study: ...
    def get_study(self, name: str) -> Study: ...
    def list_studies(
        self, *, state: StudyState | None = None, offset: int = 0, limit: int = 50
    ) -> Page[Study]: ...
    def set_study_state(self, name: str, state: StudyState) -> Study: ...
    def delete_study(self, name: str) -> None: ...

    # trials
    def suggest(
        self, name: str, *, count: int = 1, client_id: str | None = None
    ) -> SuggestResult: ...
    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Trial: ...
    def report(self, name: str, number: int, *, step: int, value: float) -> ReportResult: ...
    def fail(self, name: str, number: int, *, reason: str) -> Trial: ...
    def heartbeat(self, name: str, number: int) -> Trial: ...
    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig: ...
    def get_trial(self, name: str, number: int) -> Trial: ...
    def list_trials(
        self,
        name: str,
        *,
        state: TrialState | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[Trial]: ...
    def best_trials(self, name: str) -> list[Trial]: ...
