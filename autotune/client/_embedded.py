"""The in-process transport: calls :class:`autotune.service.StudyService` directly.

The service (and with it SQLAlchemy) is imported only when an embedded client is built, so
``import autotune`` stays light for HTTP-only users.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autotune.client._base import Listing, QueuedConfig
from autotune.models import Study, StudyState, Trial, TrialState

if TYPE_CHECKING:
    from autotune.service import StudyService

__all__ = ["EmbeddedTransport"]


class EmbeddedTransport:
    """Args:
    db: SQLAlchemy URL; ``None`` lets the service choose (``AUTOTUNE_DB`` or a SQLite file).
    service: use this service instead of building one (the caller closes it).
    """

    def __init__(self, db: str | None = None, *, service: StudyService | None = None) -> None:
        if service is None:
            from autotune.service import StudyService

            service = StudyService(db)
            self._owned = True
        else:
            self._owned = False
        self.service = service

    def __repr__(self) -> str:
        return f"EmbeddedTransport({self.service!r})"

    def close(self) -> None:
        if self._owned:
            self.service.close()

    def create_study(self, spec: Mapping[str, Any]) -> Study:
        return self.service.create_study(spec)

    def get_study(self, name: str) -> Study:
        return self.service.get_study(name)

    def list_studies(self, *, state: StudyState | None, offset: int, limit: int) -> Listing[Study]:
        page = self.service.list_studies(state=state, offset=offset, limit=limit)
        return Listing(items=list(page.items), total=page.total)

    def set_study_state(self, name: str, state: StudyState) -> Study:
        return self.service.set_study_state(name, state)

    def delete_study(self, name: str) -> None:
        self.service.delete_study(name)

    def suggest(self, name: str, *, count: int, client_id: str | None) -> list[Trial]:
        return list(self.service.suggest(name, count=count, client_id=client_id).trials)

    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None,
    ) -> Trial:
        return self.service.observe(name, number, values, metadata=metadata)

    def report(self, name: str, number: int, *, step: int, value: float) -> bool:
        return self.service.report(name, number, step=step, value=value).should_stop

    def fail(self, name: str, number: int, *, reason: str) -> Trial:
        return self.service.fail(name, number, reason=reason)

    def heartbeat(self, name: str, number: int) -> Trial:
        return self.service.heartbeat(name, number)

    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig:
        queued = self.service.enqueue(name, params)
        return QueuedConfig(id=queued.id, params=dict(queued.params))

    def get_trial(self, name: str, number: int) -> Trial:
        return self.service.get_trial(name, number)

    def list_trials(
        self, name: str, *, state: TrialState | None, offset: int, limit: int
    ) -> Listing[Trial]:
        page = self.service.list_trials(name, state=state, offset=offset, limit=limit)
        return Listing(items=list(page.items), total=page.total)

    def best_trials(self, name: str) -> list[Trial]:
        return list(self.service.best_trials(name))
