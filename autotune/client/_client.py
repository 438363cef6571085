"""``Client`` and ``StudyClient``: the user's API, written once over either transport."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from numbers import Real
from typing import Any

from autotune.client._base import QueuedConfig, Transport
from autotune.client._trial import (
    HEARTBEAT_FRACTION,
    MIN_HEARTBEAT_S,
    ActiveTrial,
    Heartbeat,
    TrialPruned,
    Values,
    is_finite_result,
)
from autotune.errors import (
    AlreadyExistsError,
    StudyNotActiveError,
    TrialFinishedError,
    ValidationError,
)
from autotune.models import Study, StudyState, Trial, TrialState
from autotune.plots._mixin import StudyPlotsMixin
from autotune.space import SearchSpace

__all__ = ["Client", "StudyClient"]

logger = logging.getLogger("autotune.client")

_PAGE = 500  # items per request when a listing walks every page
_UNSET: Any = object()

TrialRef = int | Trial | ActiveTrial
Objective = Callable[[ActiveTrial], Values | None]


class Client:
    """Talks to AutoTune, in-process or over HTTP; the same methods either way.

    ``Client()`` runs the service in this process on ``db`` (a SQLAlchemy URL; default the
    ``AUTOTUNE_DB`` environment variable, else a SQLite file ``autotune.db`` in the working
    directory). ``Client("http://host:8000")`` talks to ``autotune serve``. Both raise the
    same :mod:`autotune.errors` classes.

    Args:
        url: an ``http(s)://`` server URL; ``None`` for the embedded service. A database URL
            here (``sqlite:///x.db``, ``postgresql+psycopg://...``) means embedded on it.
        db: the embedded service's database URL.
        service: an existing :class:`~autotune.service.StudyService` to use in-process.
        timeout: HTTP only: seconds to wait for a response.
        retries: HTTP only: retries of requests that are safe to retry.
        api_key: HTTP only: the API key of a server with authentication on (its project's
            studies are the ones this client sees); ``None``: ``AUTOTUNE_API_KEY`` if set.
            The embedded service needs none.
        project: embedded only: the project whose studies this client sees and creates
            (default ``default``); over HTTP the API key's project decides.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        db: str | None = None,
        service: Any = None,
        timeout: float = 60.0,
        retries: int = 6,
        api_key: str | None = None,
        project: str | None = None,
    ) -> None:
        if url is not None and url.startswith(("http://", "https://")):
            if db is not None or service is not None:
                raise ValueError("give a server URL or db=/service=, not both")
            if project is not None:
                raise ValueError(
                    "project= is for the embedded service; a server takes the project from "
                    "the API key (api_key= or AUTOTUNE_API_KEY)"
                )
            from autotune.client._http import HttpTransport

            self._transport: Transport = HttpTransport(
                url, timeout=timeout, retries=retries, api_key=api_key
            )
        else:
            if url is not None:
                if db is not None:
                    raise ValueError("give the database URL once: Client(db=...)")
                if "://" not in url:
                    raise ValueError(
                        f"{url!r} is neither an http(s):// server URL nor a database URL; "
                        "e.g. Client('http://127.0.0.1:8000') or Client(db='sqlite:///x.db')"
                    )
                db = url
            from autotune.client._embedded import EmbeddedTransport

            self._transport = EmbeddedTransport(db, service=service, project=project)

    def __repr__(self) -> str:
        return f"Client({self._transport!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> Transport:
        return self._transport

    def close(self) -> None:
        """Release the HTTP connections or the embedded database pool."""
        self._transport.close()

    def create_study(
        self,
        name: str,
        space: Mapping[str, Any] | SearchSpace,
        objectives: Mapping[str, str] | None = None,
        *,
        constraints: Mapping[str, Sequence[Any]] | None = None,
        max_trials: int | None = None,
        algorithm: str = "auto",
        seed: int | None = None,
        heartbeat_grace_s: float | None = _UNSET,
        stopper: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        load_if_exists: bool = False,
    ) -> StudyClient:
        """Create a study and return its handle.

        Args:
            name: unique study name.
            space: parameter name -> ``autotune.Float/Int/Categorical`` or its JSON dict.
            objectives: metric -> ``"minimize"``/``"maximize"``; default ``{"value": "minimize"}``.
            constraints: outcome constraints, metric -> ``("<=", bound)``.
            max_trials: stop handing out trials after this many.
            algorithm: ``"auto"``, ``"random"``, ``"sobol"``, ...
            seed: makes the suggestions reproducible.
            heartbeat_grace_s: running trials silent for longer are abandoned; ``None`` never.
            stopper: early-stopping rule, e.g. ``{"type": "median"}``.
            metadata: free-form JSON stored with the study.
            load_if_exists: return the existing study of that name instead of raising
                :class:`~autotune.errors.AlreadyExistsError` (its spec is not compared).
        """
        spec: dict[str, Any] = {"name": name, "space": _space_json(space)}
        optional = {
            "objectives": objectives,
            "constraints": constraints,
            "max_trials": max_trials,
            "seed": seed,
            "stopper": stopper,
            "metadata": metadata,
        }
        spec.update({k: _plain(v) for k, v in optional.items() if v is not None})
        spec["algorithm"] = algorithm
        if heartbeat_grace_s is not _UNSET:
            spec["heartbeat_grace_s"] = heartbeat_grace_s
        try:
            info = self._transport.create_study(spec)
        except AlreadyExistsError:
            if not load_if_exists:
                raise
            info = self._transport.get_study(name)
        return StudyClient(self._transport, info)

    def get_study(self, name: str) -> StudyClient:
        """The handle of an existing study; :class:`~autotune.errors.NotFoundError` if none."""
        return StudyClient(self._transport, self._transport.get_study(name))

    def list_studies(self, state: StudyState | str | None = None) -> list[Study]:
        """Every study (all pages) in creation order, optionally only those in ``state``."""
        state = StudyState(state) if state is not None else None
        out: list[Study] = []
        while True:
            page = self._transport.list_studies(state=state, offset=len(out), limit=_PAGE)
            out.extend(page.items)
            if not page.items or len(out) >= page.total:
                return out

    def delete_study(self, name: str) -> None:
        """Delete a study and all its trials."""
        self._transport.delete_study(name)


class StudyClient(StudyPlotsMixin):
    """One study, seen through a client: suggest, observe, and the rest.

    Trials are referred to by number or by the ``Trial``/``ActiveTrial`` objects this class
    returns. Thread-safe as far as the transport is (both are), so ``optimize(n_jobs=...)``
    and user threads may share one handle.
    """

    def __init__(self, transport: Transport, info: Study) -> None:
        self._transport = transport
        self._info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"StudyClient(name={self.name!r}, transport={self._transport!r})"

    @property
    def info(self) -> Study:
        """The study as it is now (fetched on every access: state and counters change)."""
        self._info = self._transport.get_study(self.name)
        return self._info

    @property
    def objectives(self) -> dict[str, str]:
        return {k: str(v) for k, v in self._info.objectives.items()}

    # -- trials --------------------------------------------------------------------------------
    def suggest(self, count: int = 1, *, client_id: str | None = None) -> list[Trial]:
        """New trials to evaluate, recorded as running. Always a list, possibly shorter than
        ``count`` (empty once ``max_trials`` is reached).

        Args:
            count: how many trials.
            client_id: makes the call idempotent: while this client id has running trials,
                asking again returns them instead of new ones.
        """
        return self._transport.suggest(self.name, count=count, client_id=client_id)

    def observe(
        self,
        trial: TrialRef,
        values: Values,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Trial:
        """Complete a trial with its metrics.

        Args:
            trial: the trial or its number.
            values: ``{"loss": 0.1, ...}``; a bare number for a single-objective study; a
                sequence in the order of the objectives.
            metadata: JSON stored with the trial.
        """
        return self._transport.observe(
            self.name, _number(trial), self._values(values), metadata=metadata
        )

    def report(self, trial: TrialRef, step: int, value: float) -> bool:
        """Store an intermediate value; returns whether the trial should stop early.

        ``True`` means the study's stopper has ended the trial as pruned. Reporting on a trial
        that is already pruned answers ``True`` too (a retried report, or a worker that missed
        the first answer), rather than raising :class:`~autotune.errors.TrialFinishedError`.
        """
        number = _number(trial)
        try:
            return self._transport.report(self.name, number, step=step, value=_num(value))
        except TrialFinishedError:
            if self._transport.get_trial(self.name, number).state == TrialState.PRUNED:
                return True
            raise

    def fail(self, trial: TrialRef, reason: str = "") -> Trial:
        """Mark a trial failed, with why."""
        return self._transport.fail(self.name, _number(trial), reason=reason)

    def heartbeat(self, trial: TrialRef) -> Trial:
        """Tell the service a running trial is alive (``trial()``/``optimize`` do it for you)."""
        return self._transport.heartbeat(self.name, _number(trial))

    def enqueue(self, params: Mapping[str, Any]) -> QueuedConfig:
        """Put a configuration of your own at the front of the queue (warm start)."""
        return self._transport.enqueue(self.name, _plain(params))

    def get_trial(self, number: int) -> Trial:
        return self._transport.get_trial(self.name, number)

    def trials(self, state: TrialState | str | None = None) -> list[Trial]:
        """Every trial (all pages) by number, optionally only those in ``state``."""
        state = TrialState(state) if state is not None else None
        out: list[Trial] = []
        while True:
            page = self._transport.list_trials(self.name, state=state, offset=len(out), limit=_PAGE)
            out.extend(page.items)
            if not page.items or len(out) >= page.total:
                return out

    def count_trials(self, state: TrialState | str | None = None) -> int:
        """How many trials the study has, optionally only those in ``state``."""
        state = TrialState(state) if state is not None else None
        return self._transport.list_trials(self.name, state=state, offset=0, limit=1).total

    @property
    def best_trials(self) -> list[Trial]:
        """The best trial in a list, or the Pareto-optimal trials for several objectives."""
        return self._transport.best_trials(self.name)

    @property
    def best_trial(self) -> Trial:
        """The best completed trial of a single-objective study.

        Raises:
            ValidationError: the study has several objectives (use ``best_trials``).
            NotFoundError: no trial has completed yet.
        """
        if len(self._info.objectives) > 1:
            raise ValidationError(
                f"study {self.name!r} has {len(self._info.objectives)} objectives "
                f"({', '.join(self._info.objectives)}), so there is no single best trial; "
                "use study.best_trials for the Pareto-optimal trials",
                field="objectives",
            )
        best = self.best_trials
        if not best:
            from autotune.errors import NotFoundError

            raise NotFoundError(
                f"study {self.name!r} has no completed trial yet", details={"study": self.name}
            )
        return best[0]

    # -- study state ---------------------------------------------------------------------------
    def pause(self) -> Study:
        self._info = self._transport.set_study_state(self.name, StudyState.PAUSED)
        return self._info

    def resume(self) -> Study:
        self._info = self._transport.set_study_state(self.name, StudyState.ACTIVE)
        return self._info

    def complete(self) -> Study:
        self._info = self._transport.set_study_state(self.name, StudyState.COMPLETED)
        return self._info

    def delete(self) -> None:
        self._transport.delete_study(self.name)

    # -- running trials ------------------------------------------------------------------------
    @contextmanager
    def trial(self, *, client_id: str | None = None) -> Iterator[ActiveTrial]:
        """Suggest one trial and complete it when the block ends::

            with study.trial() as t:
                t.observe({"loss": train(**t.params)})

        The values set with ``t.observe`` (or ``t.values = ...``) are sent when the block
        ends. If the block raises, the trial is marked failed with the exception's text and the
        exception propagates; a block that sets no values fails the trial and raises
        :class:`~autotune.errors.ValidationError`. After ``t.report`` answered ``True`` the
        stopper has pruned the trial: leaving the block (or raising :class:`TrialPruned`) sends
        nothing more. A heartbeat thread keeps a long trial from
        being abandoned meanwhile.

        Raises:
            StudyNotActiveError: the study hands out no more trials (``max_trials`` reached).
        """
        trials = self.suggest(1, client_id=client_id)
        if not trials:
            raise StudyNotActiveError(
                f"study {self.name!r} has no trials left to hand out "
                f"(max_trials={self._info.max_trials})",
                details={"study": self.name},
            )
        with self._running(trials[0]) as active:
            yield active

    @contextmanager
    def _running(self, trial: Trial) -> Iterator[ActiveTrial]:
        active = ActiveTrial(self, trial)
        with self._heartbeat(trial.number):
            try:
                yield active
            except TrialPruned as e:
                if active.should_stop:
                    active._refresh()
                else:
                    active._fail(
                        f"pruned by the objective: {e}" if str(e) else "pruned by the objective"
                    )
                return  # a requested early end, not an error
            except BaseException as e:
                if active.should_stop:
                    active._refresh()  # already pruned: there is nothing left to fail
                else:
                    active._fail(f"{type(e).__name__}: {e}")
                raise
            active._complete()

    def _heartbeat(self, number: int) -> Any:
        grace = self._info.heartbeat_grace_s
        if grace is None:
            from contextlib import nullcontext

            return nullcontext()
        return Heartbeat(self, number, max(MIN_HEARTBEAT_S, grace * HEARTBEAT_FRACTION))

    def optimize(
        self,
        fn: Objective,
        n_trials: int,
        *,
        n_jobs: int = 1,
        catch: tuple[type[BaseException], ...] = (),
    ) -> list[Trial]:
        """Evaluate ``fn`` on ``n_trials`` suggested trials, ``n_jobs`` at a time in threads.

        ``fn(t)`` gets an :class:`ActiveTrial` (``t.params``, ``t["lr"]``, ``t.report``) and
        returns a number (one objective), a dict of metrics, or ``None`` after ``t.observe``.

        As in Optuna: an exception from ``fn`` marks the trial failed; if it is one of
        ``catch`` the loop goes on, otherwise the remaining trials are not started and the
        exception is re-raised once the running ones finish. A trial that ``t.report`` answered
        ``True`` for is pruned and the loop goes on (``fn`` may return anything or raise
        :class:`TrialPruned`). A NaN or infinite result fails
        the trial with a warning and the loop goes on. The loop also ends early when the study
        stops handing out trials (``max_trials`` reached, paused or completed).

        Returns:
            The trials finished by this call (completed or failed), in finishing order.
        """
        if n_trials < 0:
            raise ValueError(f"n_trials must be >= 0, got {n_trials}")
        if n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
        lock = threading.Lock()
        stop = threading.Event()
        left = [n_trials]
        finished: list[Trial] = []
        errors: list[BaseException] = []

        def claim() -> bool:
            with lock:
                if stop.is_set() or left[0] <= 0:
                    return False
                left[0] -= 1
                return True

        def one() -> bool:
            try:
                trials = self.suggest(1)
            except StudyNotActiveError as e:
                logger.info("optimize stops: %s", e)
                return False
            if not trials:
                logger.info("optimize stops: study %r hands out no more trials", self.name)
                return False
            active: ActiveTrial | None = None
            try:
                with self._running(trials[0]) as active:
                    result = fn(active)
                    if result is not None and not active.should_stop:
                        active.values = result
                    if active.values is not None and not is_finite_result(active.values):
                        raise NonFiniteObjective(f"objective returned {active.values!r}")
            except NonFiniteObjective as e:
                warnings.warn(f"trial {trials[0].number} failed: {e}", RuntimeWarning, stacklevel=4)
            except catch as e:
                logger.warning("trial %d failed: %s: %s", trials[0].number, type(e).__name__, e)
            finally:
                if active is not None:
                    with lock:
                        finished.append(active.trial)
            return True

        def worker() -> None:
            while claim():
                try:
                    if not one():
                        stop.set()
                except BaseException as e:
                    with lock:
                        errors.append(e)
                    stop.set()

        if n_jobs == 1:
            worker()
        else:
            with ThreadPoolExecutor(n_jobs, thread_name_prefix=f"autotune-{self.name}") as pool:
                for f in [pool.submit(worker) for _ in range(n_jobs)]:
                    f.result()
        if errors:
            raise errors[0]
        return finished

    def _values(self, values: Values) -> dict[str, float]:
        objectives = list(self._info.objectives)
        if isinstance(values, Real) and not isinstance(values, bool):
            if len(objectives) != 1:
                raise ValidationError(
                    f"study {self.name!r} has objectives {objectives}: pass a dict of values, "
                    f"not the single number {values!r}",
                    field="values",
                )
            return {objectives[0]: _num(values)}
        if isinstance(values, (list, tuple)):
            if len(values) != len(objectives):
                raise ValidationError(
                    f"got {len(values)} values for the {len(objectives)} objectives "
                    f"{objectives}; pass them in that order or as a dict",
                    field="values",
                )
            return {k: _num(v) for k, v in zip(objectives, values, strict=True)}
        if isinstance(values, Mapping):
            return {str(k): _num(v, field=f"values.{k}") for k, v in values.items()}
        raise ValidationError(
            f"values must be a dict of metric -> number, got {type(values).__name__}",
            field="values",
        )


class NonFiniteObjective(Exception):
    pass


def _number(trial: TrialRef) -> int:
    if isinstance(trial, (Trial, ActiveTrial)):
        return trial.number
    if isinstance(trial, int) and not isinstance(trial, bool):
        return trial
    raise ValidationError(
        f"expected a trial or a trial number, got {type(trial).__name__}", field="trial"
    )


def _num(value: Any, *, field: str = "value") -> float:
    if isinstance(value, Real) and not isinstance(value, bool):
        return float(value)  # numpy scalars too; NaN passes through for the service to refuse
    raise ValidationError(
        f"{field} must be a number, got {value!r} ({type(value).__name__})", field=field
    )


def _space_json(space: Mapping[str, Any] | SearchSpace) -> dict[str, Any]:
    if not isinstance(space, Mapping):
        raise ValidationError(
            f"space must be a dict of parameter name -> parameter, got {type(space).__name__}",
            field="space",
        )
    # SearchSpace validates and names the bad parameter, the same in both transports.
    sp = space if isinstance(space, SearchSpace) else SearchSpace(space)
    return sp.to_json()


def _plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts and lists (JSON-able for the HTTP transport)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str):
        return value.item()  # numpy scalar
    return value
