"""The in-process transport: calls :class:`autotune.service.StudyService` directly.

The service (and with it SQLAlchemy) is imported only when an embedded client is built, so
``import autotune`` stays light for HTTP-only users.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from autotune.client._base import Listing, QueuedConfig
from autotune.errors import UnavailableError, ValidationError
from autotune.models import Study, StudyState, Trial, TrialState

if TYPE_CHECKING:
    from autotune.service import StudyService

__all__ = ["EmbeddedTransport"]

F = TypeVar("F", bound=Callable[..., Any])


def _database_errors(fn: F) -> F:
    """Raise what the HTTP transport raises when the database fails: the REST API answers a
    busy or unreachable database with 503 (UnavailableError) and a refused value with 422."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy import exc as sa_exc

        try:
            return fn(*args, **kwargs)
        except (sa_exc.OperationalError, sa_exc.TimeoutError) as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise UnavailableError(
                f"the database is busy or unreachable: {reason}",
                details={"reason": type(e).__name__},
            ) from e
        except sa_exc.DataError as e:
            raise ValidationError(
                "the database refused a value (out of range or bad characters)",
                field="body",
                details={"reason": type(e).__name__},
            ) from e

    return wrapper  # type: ignore[return-value]


class EmbeddedTransport:
    """Args:
    db: SQLAlchemy URL; ``None`` lets the service choose (``AUTOTUNE_DB`` or a SQLite file).
    service: use this service instead of building one (the caller closes it).
    project: the project every call runs in (default ``default``), as an API key's project
        scopes an HTTP client; an invalid name raises ``ValidationError``.
    """

    @_database_errors
    def __init__(
        self,
        db: str | None = None,
        *,
        service: StudyService | None = None,
        project: str | None = None,
    ) -> None:
        from autotune.projects import DEFAULT_PROJECT

        if service is None:
            from autotune.service import StudyService

            service = StudyService(db)
            self._owned = True
        else:
            self._owned = False
        self._service = service
        try:
            self.service = service.scoped(project or DEFAULT_PROJECT)
        except BaseException:
            self.close()
            raise
        self.project = self.service.project

    def __repr__(self) -> str:
        return f"EmbeddedTransport({self._service!r}, project={self.project!r})"

    def close(self) -> None:
        if self._owned:
            self._service.close()

    @_database_errors
    def create_study(self, spec: Mapping[str, Any]) -> Study:
        return self.service.create_study(spec)

    @_database_errors
    def get_study(self, name: str) -> Study:
        return self.service.get_study(name)

    @_database_errors
    def list_studies(self, *, state: StudyState | None, offset: int, limit: int) -> Listing[Study]:
        page = self.service.list_studies(state=state, offset=offset, limit=limit)
        return Listing(items=list(page.items), total=page.total)

    @_database_errors
    def set_study_state(self, name: str, state: StudyState) -> Study:
        return self.service.set_study_state(name, state)

    @_database_errors
    def delete_study(self, name: str) -> None:
        self.service.delete_study(name)

    @_database_errors
    def suggest(self, name: str, *, count: int, client_id: str | None) -> list[Trial]:
        return list(self.service.suggest(name, count=count, client_id=client_id).trials)

    @_database_errors
    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None,
    ) -> Trial:
        return self.service.observe(name, number, values, metadata=metadata)

    @_database_errors
    def report(self, name: str, number: int, *, step: int, value: float) -> bool:
        return self.service.report(name, number, step=step, value=value).should_stop

    @_database_errors
    def fail(self, name: str, number: int, *, reason: str) -> Trial:
        return self.service.fail(name, number, reason=reason)

    @_database_errors
    def heartbeat(self, name: str, number: int) -> Trial:
        return self.service.heartbeat(name, number)

    @_database_errors
    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig:
        queued = self.service.enqueue(name, params)
        return QueuedConfig(id=queued.id, params=dict(queued.params))

    @_database_errors
    def get_trial(self, name: str, number: int) -> Trial:
        return self.service.get_trial(name, number)

    @_database_errors
    def list_trials(
        self, name: str, *, state: TrialState | None, offset: int, limit: int
    ) -> Listing[Trial]:
        page = self.service.list_trials(name, state=state, offset=offset, limit=limit)
        return Listing(items=list(page.items), total=page.total)

    @_database_errors
    def best_trials(self, name: str) -> list[Trial]:
        return list(self.service.best_trials(name))
