"""The transport interface: what a client needs from the service, in-process or over HTTP.

Both transports return the domain models (:mod:`autotune.models`) and raise the same
:mod:`autotune.errors` classes, so :class:`~autotune.client.Client` is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from autotune.models import Study, StudyState, Trial, TrialState

__all__ = ["Transport", "Listing", "QueuedConfig"]

T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page of a listing and the total count across pages."""

    items: list[T]
    total: int


@dataclass(frozen=True)
class QueuedConfig:
    """A configuration put at the front of the queue by ``enqueue``."""

    id: int
    params: dict[str, Any]


class Transport(Protocol):
    """The service's operations, one method each (see :class:`autotune.service.StudyService`)."""

    def close(self) -> None: ...

    def create_study(self, spec: Mapping[str, Any]) -> Study: ...

    def get_study(self, name: str) -> Study: ...

    def list_studies(
        self, *, state: StudyState | None, offset: int, limit: int
    ) -> Listing[Study]: ...

    def set_study_state(self, name: str, state: StudyState) -> Study: ...

    def delete_study(self, name: str) -> None: ...

    def suggest(self, name: str, *, count: int, client_id: str | None) -> list[Trial]: ...

    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None,
    ) -> Trial: ...

    def report(self, name: str, number: int, *, step: int, value: float) -> bool: ...

    def fail(self, name: str, number: int, *, reason: str) -> Trial: ...

    def heartbeat(self, name: str, number: int) -> Trial: ...

    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig: ...

    def get_trial(self, name: str, number: int) -> Trial: ...

    def list_trials(
        self, name: str, *, state: TrialState | None, offset: int, limit: int
    ) -> Listing[Trial]: ...

    def best_trials(self, name: str) -> list[Trial]: ...
