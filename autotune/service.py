"""StudyService: the one entry point through which studies and trials change state.

The REST API and the embedded client both call this class; it is stateless between calls (all
state is in the database), so several API processes can share one PostgreSQL database.

Every method is one short transaction (retried as a whole on transient database errors). Suggest
is atomic per study: on PostgreSQL it locks the study row (``SELECT ... FOR UPDATE``), on SQLite
the write lock serializes it; so trial numbers never collide and ``max_trials`` is never exceeded.

An expensive designer (a model fit) never runs inside that transaction: suggest is optimistic.
It reads the history, runs the designer with no transaction open, and keeps the proposal in the
study's in-process slot keyed by the history's *version*; the write transaction hands it out only
if the version is unchanged, else the history is read again (a few times; the last try computes
under the lock, so suggest always makes progress). The version is ``(n_trials, n_running,
n_abandoned)`` plus the queued configurations popped and the count asked: trials only move
running -> finished | abandoned and abandoned -> finished, and each move lowers ``n_running`` or
``n_abandoned`` while ``n_trials`` stays, so with ``n_trials`` unchanged equal counts mean an
unchanged history (no stored counter to bump on every observe, no extra lock). The same slot
receives the proposal that a background thread computes after each observe (``precompute``),
so a suggest that finds it returns at once; any proposal may be lost without changing results.

A report to a study with a stopper takes the study lock as suggest does, so racing reports are
decided one after the other; without a stopper it stays three statements and takes no lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autotune.designers import Problem, designer_names, make_designer
from autotune.errors import (
    AlreadyExistsError,
    AutotuneError,
    ConflictError,
    NotFoundError,
    StudyNotActiveError,
    TrialFinishedError,
    ValidationError,
)
from autotune.models import (
    FINISHED_STATES,
    MAX_METADATA_BYTES,
    STUDY_NAME_PATTERN,
    Direction,
    Measurement,
    Study,
    StudySpec,
    StudyState,
    Trial,
    TrialState,
)
from autotune.projects import DEFAULT_PROJECT, check_project
from autotune.space import Params
from autotune.stoppers import Curve, make_stopper, validate_stopper_config
from autotune.storage.engine import Database
from autotune.storage.schema import (
    MAX_CLIENT_ID,
    IntermediateValueRow,
    QueueRow,
    StudyRow,
    TrialRow,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = [
    "StudyService",
    "ProjectStudies",
    "Page",
    "ReportResult",
    "SuggestResult",
    "QueuedConfig",
]

MAX_SUGGEST_COUNT = 1000
MAX_PAGE_LIMIT = 1000
MAX_ERROR_CHARS = 10_000
# Trial numbers and steps are stored as BIGINT; anything larger cannot exist.
_MAX_INT64 = 2**63 - 1
# Requeued configurations of abandoned trials go ahead of the user's enqueued ones.
_PRIORITY_REQUEUED = 1
_PRIORITY_USER = 0
# Designer instances kept per process (they may cache a fitted model between calls).
_DESIGNER_CACHE_SIZE = 256
# Optimistic tries of an expensive designer before computing under the study lock.
_OPTIMISTIC_TRIES = 3
# Algorithms that fit a model per call, whatever their class says.
_EXPENSIVE_ALGORITHMS = frozenset({"auto", "gp"})
# Background threads that compute the next suggestion ahead. One: a GP fit already uses a core
# (torch releases the GIL in its kernels), and on a small server the API needs the other.
_PRECOMPUTE_WORKERS = 1

_RUNNING = TrialState.RUNNING.value
_ABANDONED = TrialState.ABANDONED.value
_COMPLETED = TrialState.COMPLETED.value
_PRUNED = TrialState.PRUNED.value
_FINISHED = tuple(s.value for s in FINISHED_STATES)

# Core tables: the service speaks SQL expressions directly (no ORM unit of work on the hot path).
_studies = StudyRow.__table__
_trials = TrialRow.__table__
_queue = QueueRow.__table__
_ivalues = IntermediateValueRow.__table__
_S, _T, _Q, _I = _studies.c, _trials.c, _queue.c, _ivalues.c
# Row attribute names follow the models' (``meta`` for the ``metadata`` column).
_STUDY_COLUMNS = tuple(c.label("meta") if c.name == "metadata" else c for c in _studies.c)
# The trial columns that make a ``Trial`` (everything but ids and flags).
_SELECT_STUDY = select(*_STUDY_COLUMNS).where(
    _S.project == bindparam("b_project"), _S.name == bindparam("b_name")
)
_SELECT_STUDY_FOR_UPDATE = _SELECT_STUDY.with_for_update()
_TRIAL_COLUMNS = (
    _T.number,
    _T.state,
    _T.params,
    _T["values"],
    _T.client_id,
    _T.error,
    _T["metadata"].label("meta"),
    _T.created_at,
    _T.completed_at,
    _T.heartbeat_at,
)
# The statements of suggest and observe, built once (parameters named b_*; an UPDATE's SET
# columns come from the other keys of the parameters passed with it).
_ABANDON_SILENT = (
    update(_trials)
    .where(
        _T.study_id == bindparam("b_sid"),
        _T.state == _RUNNING,
        _T.heartbeat_at < bindparam("b_cutoff"),
    )
    .values(state=_ABANDONED)
    .returning(_T.id, _T.number, _T.params)
)
_COUNT_RUNNING_ABANDONED = (
    select(_T.state, func.count())
    .where(_T.study_id == bindparam("b_sid"), _T.state.in_((_RUNNING, _ABANDONED)))
    .group_by(_T.state)
)
# The head of the queue as _POP_QUEUE would pop it, without popping (the optimistic read).
_PEEK_QUEUE = (
    select(_Q.id, _Q.priority, _Q.params)
    .where(_Q.study_id == bindparam("b_sid"))
    .order_by(_Q.priority.desc(), _Q.id)
    .limit(bindparam("b_limit"))
)
_POP_QUEUE = (
    delete(_queue)
    .where(
        _Q.id.in_(
            select(_Q.id)
            .where(_Q.study_id == bindparam("b_sid"))
            .order_by(_Q.priority.desc(), _Q.id)
            .limit(bindparam("b_limit"))
            .scalar_subquery()
        )
    )
    .returning(_Q.id, _Q.priority, _Q.params)
)
_INSERT_TRIAL = insert(_trials)
_UPDATE_STUDY = update(_studies).where(_S.id == bindparam("b_sid"))
_UPDATE_TRIAL = update(_trials).where(_T.id == bindparam("b_id"))
_UPDATE_TRIAL_IN_STATE = update(_trials).where(
    _T.id == bindparam("b_id"), _T.state == bindparam("b_state")
)
_SELECT_TRIAL_WITH_STUDY = (
    select(
        *_TRIAL_COLUMNS,
        _T.id,
        _T.has_intermediate,
        _S.id.label("study_id"),
        _S.objectives.label("study_objectives"),
        _S.constraints.label("study_constraints"),
        _S.max_trials.label("study_max_trials"),
        _S.n_trials.label("study_n_trials"),
        _S.state.label("study_state"),
        _S.stopper.label("study_stopper"),
        _S.algorithm.label("study_algorithm"),
        _S.created_at.label("study_created_at"),
    )
    .join(_studies, _S.id == _T.study_id)
    .where(
        _S.project == bindparam("b_project"),
        _S.name == bindparam("b_name"),
        _T.number == bindparam("b_number"),
    )
)
# A report to a study with a stopper holds the study row (PostgreSQL), as suggest does, so that
# racing reports decide one after the other; the trial's state is read again under the lock.
_LOCK_STUDY_TRIAL_STATE = (
    select(_T.state)
    .join(_studies, _S.id == _T.study_id)
    .where(_T.id == bindparam("b_id"))
    .with_for_update(of=_studies)
)
# Every reported value of the study's trials, for the stopper: one query.
_SELECT_CURVES = (
    select(_T.number, _T.state, _I.step, _I.value)
    .join(_ivalues, _I.trial_id == _T.id)
    .where(_T.study_id == bindparam("b_sid"))
)


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


# What a designer's proposal depends on, besides the study: (n_trials, n_running, n_abandoned,
# ids of the queued configurations handed out with it, how many configurations were asked).
_HistoryKey = tuple[int, int, int, tuple[int, ...], int]


@dataclass(frozen=True)
class _Plan:
    """A designer's proposal for one version of a study's history."""

    key: _HistoryKey
    configs: list[Params]
    info: dict[str, Any]


class _Slot:
    """A study's designer in this process: the instance (it may cache a fitted model), the
    parsed problem, a lock (one call of the instance at a time) and the latest proposal."""

    def __init__(self, study: Study) -> None:
        self.designer = make_designer(study.algorithm)
        self.problem = Problem.from_study(study)
        self.expensive = bool(getattr(self.designer, "expensive", False)) or (
            study.algorithm in _EXPENSIVE_ALGORITHMS
        )
        # Reentrant: a suggest holding it may compute under the study lock as a last resort.
        self.lock = threading.RLock()
        self.plan: _Plan | None = None

    def plan_for(self, key: _HistoryKey) -> _Plan | None:
        plan = self.plan  # one read: another thread may replace it
        return plan if plan is not None and plan.key == key else None


class _Stale(Exception):  # noqa: N818 - internal signal, never leaves the service
    """The write transaction found no proposal for the current history: roll back and prepare
    one outside the lock."""

    def __init__(self, slot: _Slot) -> None:
        super().__init__("stale proposal")
        self.slot = slot


class StudyService:
    """Create studies, hand out and complete trials. Thread-safe; one per process is enough.

    Args:
        db_url: SQLAlchemy URL. ``None`` -> ``AUTOTUNE_DB`` or ``sqlite:///autotune.db``.
        clock: returns the current UTC time (tests move it forward to expire heartbeats).
        migrate: apply Alembic migrations on start (several processes may start at once).
        pool_size: PostgreSQL connections kept per process.
        max_overflow: extra PostgreSQL connections allowed under load.
        precompute: after each observe, fail or pruning report of a study whose designer is
            expensive, compute its next suggestion (``count=1``) in a background thread, so
            that a suggest arriving later returns at once. The proposal is used only while the
            history it was computed from is unchanged, so results are the same either way.
            ``AUTOTUNE_PRECOMPUTE=0`` turns it off too.
    """

    def __init__(
        self,
        db_url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        migrate: bool = True,
        pool_size: int = 5,
        max_overflow: int = 20,
        precompute: bool = True,
    ) -> None:
        self._db = Database(db_url, pool_size=pool_size, max_overflow=max_overflow)
        self._clock = clock or _utcnow
        self._designers: OrderedDict[tuple[int, datetime], _Slot] = OrderedDict()
        self._designers_lock = threading.Lock()
        # Study name -> its expensive designer's slot, a hint for suggest (checked as it goes).
        self._slot_hints: dict[tuple[str, str], _Slot] = {}
        self._precompute = precompute and os.environ.get("AUTOTUNE_PRECOMPUTE", "1") != "0"
        self._precompute_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # started by the first precompute
        # (project, study) with a precompute waiting to start
        self._scheduled: set[tuple[str, str]] = set()
        self._futures: set[Future[None]] = set()
        self._closed = False
        if migrate:
            from autotune.storage.migrate import upgrade

            try:
                self._db.retrying(lambda _attempt: upgrade(self._db))
            except BaseException:
                self._db.dispose()
                raise

    @property
    def db(self) -> Database:
        return self._db

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._db.url.render_as_string(hide_password=True)

    @property
    def precompute(self) -> bool:
        """Whether the next suggestion of expensive designers is computed in the background."""
        return self._precompute

    def scoped(self, project: str) -> ProjectStudies:
        """This service with every call in ``project``."""
        return ProjectStudies(self, check_project(project))

    def close(self) -> None:
        """Stop the background work (waiting for a computation under way) and the engines."""
        with self._precompute_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._db.dispose()

    def wait_precomputed(self, timeout: float | None = None) -> bool:
        """Wait until the background computations scheduled so far are done (for tests and
        benchmarks); False if some are still running after ``timeout`` seconds."""
        with self._precompute_lock:
            futures = list(self._futures)
        return not wait_futures(futures, timeout=timeout).not_done

    def __enter__(self) -> StudyService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    # ------------------------------------------------------------------------------------------
    # studies
    # ------------------------------------------------------------------------------------------
    def create_study(
        self, spec: StudySpec | Mapping[str, Any], *, project: str = DEFAULT_PROJECT
    ) -> Study:
        """Create a study from a spec (validated here). A missing seed is drawn and stored.

        Args:
            spec: a ``StudySpec`` or its JSON form (name, space, objectives, ...).
            project: the project it belongs to (names are unique per project).

        Raises:
            ValidationError: a bad spec or an unknown algorithm.
            AlreadyExistsError: a study of that name exists.
        """
        spec = StudySpec.parse(dict(spec) if isinstance(spec, Mapping) else spec)
        check_project(project)
        names = designer_names()
        if spec.algorithm not in names:
            raise ValidationError(
                f"unknown algorithm {spec.algorithm!r}; choose one of {names}",
                field="algorithm",
                details={"allowed": names},
            )
        seed = spec.seed if spec.seed is not None else secrets.randbits(63)
        space = spec.search_space().to_json()
        # Raises naming ``stopper.<key>``; stored with its defaults filled in.
        stopper = validate_stopper_config(spec.stopper)

        def work(s: Session, attempt: int) -> Study:
            if attempt:
                # A retry after a commit whose acknowledgement was lost: our own study is there.
                mine = s.scalars(
                    select(StudyRow).where(_S.project == project, _S.name == spec.name)
                ).one_or_none()
                if mine is not None and mine.seed == seed and mine.space == space:
                    return _study(mine)
            now = self._now()
            row = StudyRow(
                project=project,
                name=spec.name,
                state=StudyState.ACTIVE.value,
                space=space,
                objectives={k: v.value for k, v in spec.objectives.items()},
                constraints={k: [op, b] for k, (op, b) in spec.constraints.items()},
                max_trials=spec.max_trials,
                algorithm=spec.algorithm,
                seed=seed,
                heartbeat_grace_s=spec.heartbeat_grace_s,
                stopper=stopper,
                meta=spec.metadata,
                n_trials=0,
                designer_info={},
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise AlreadyExistsError(
                    f"a study named {spec.name!r} already exists; choose another name or "
                    "delete it first",
                    details={"field": "name", "name": spec.name},
                ) from None
            return _study(row)

        return self._db.run(work, write=True)

    def get_study(self, name: str, *, project: str = DEFAULT_PROJECT) -> Study:
        """The study named ``name``.

        Args:
            name: the study's name, unique in its project.
            project: the project.

        Raises:
            NotFoundError: no study has that name.
        """
        return self._db.run(lambda s, _: _study(self._study_row(s, name, project)), write=False)

    def list_studies(
        self,
        *,
        state: StudyState | None = None,
        offset: int = 0,
        limit: int = 50,
        project: str = DEFAULT_PROJECT,
    ) -> Page[Study]:
        """A project's studies ordered by id, with ``n_trials`` filled.

        Args:
            project: the project.
            state: only studies in this state.
            offset: how many to skip.
            limit: at most this many (1 to 1000).

        Raises:
            ValidationError: a bad state, offset or limit.
        """
        state_v = _study_state(state) if state is not None else None
        _check_page(offset, limit)

        def work(s: Session, _attempt: int) -> Page[Study]:
            where = [_S.project == project]
            if state_v is not None:
                where.append(_S.state == state_v.value)
            total = s.scalar(select(func.count()).select_from(_studies).where(*where)) or 0
            rows = s.execute(
                select(*_STUDY_COLUMNS).where(*where).order_by(_S.id).offset(offset).limit(limit)
            ).all()
            return Page[Study](
                items=[_study(r) for r in rows], total=total, offset=offset, limit=limit
            )

        return self._db.run(work, write=False)

    def set_study_state(
        self, name: str, state: StudyState, *, project: str = DEFAULT_PROJECT
    ) -> Study:
        """Pause, resume or complete a study. Completing is final.

        Args:
            name: the study.
            state: ``active`` (resume), ``paused`` or ``completed``.

        Raises:
            ValidationError: an unknown state.
            NotFoundError: unknown study.
            ConflictError: resuming or pausing a completed study.
        """
        new = _study_state(state)

        def work(s: Session, _attempt: int) -> Study:
            row = self._study_row(s, name, project, lock=True)
            if row.state == new.value:
                return _study(row)
            if row.state == StudyState.COMPLETED.value:
                raise ConflictError(
                    f"study {name!r} is completed, which is final; it cannot become "
                    f"{new.value!r}. Create a new study to continue.",
                    details={"field": "state", "state": row.state},
                )
            now = self._now()
            s.execute(
                update(_studies).where(_S.id == row.id).values(state=new.value, updated_at=now)
            )
            return _study(row, state=new.value, updated_at=now)

        return self._db.run(work, write=True)

    def delete_study(self, name: str, *, project: str = DEFAULT_PROJECT) -> None:
        """Delete a study with its trials, intermediate values and queue.

        Args:
            name: the study.

        Raises:
            NotFoundError: unknown study.
        """

        def work(s: Session, _attempt: int) -> None:
            _check_name(name)
            res = s.execute(delete(_studies).where(_S.project == project, _S.name == name))
            if res.rowcount == 0:
                raise _study_not_found(name)

        self._db.run(work, write=True)

    # ------------------------------------------------------------------------------------------
    # trials
    # ------------------------------------------------------------------------------------------
    def suggest(
        self,
        name: str,
        *,
        count: int = 1,
        client_id: str | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> SuggestResult:
        """Hand out up to ``count`` new running trials (fewer when ``max_trials`` is near).

        Args:
            name: the study.
            count: how many trials, 1 to 1000.
            client_id: the asking worker. A client that still has running trials gets those
                back instead of new ones, so a retried request never leaks trials.

        Returns:
            The trials (empty when the budget is used up), the study's state and the designer.

        Raises:
            ValidationError: ``count`` outside 1..1000 or a bad ``client_id``.
            NotFoundError: unknown study.
            StudyNotActiveError: the study is paused or completed.
        """
        if isinstance(count, bool) or not isinstance(count, int | np.integer):
            raise ValidationError(
                f"count must be an integer from 1 to {MAX_SUGGEST_COUNT}, got {count!r}",
                field="count",
            )
        count = int(count)
        if not 1 <= count <= MAX_SUGGEST_COUNT:
            raise ValidationError(
                f"count must be from 1 to {MAX_SUGGEST_COUNT}, got {count}", field="count"
            )
        if client_id is not None and (
            not isinstance(client_id, str)
            or not 1 <= len(client_id) <= MAX_CLIENT_ID
            or "\x00" in client_id
        ):
            raise ValidationError(
                f"client_id must be a string of 1 to {MAX_CLIENT_ID} characters (no NUL)",
                field="client_id",
            )

        def attempt(inline: bool) -> SuggestResult | None:
            return self._db.run(
                lambda s, _: self._suggest(
                    s, name, project, count=count, client_id=client_id, inline=inline
                ),
                write=True,
            )

        # The first try needs no proposal (a cheap designer, the queue, a client's own trials)
        # or finds the one computed ahead. Otherwise this thread holds the study's slot, so
        # that threads of this process take turns instead of invalidating each other's work,
        # and prepares a proposal outside the transaction; the last try computes inside (only
        # once a _Stale confirmed that the slot held is the study's: no lock-order surprise).
        held: _Slot | None = self._slot_hints.get((project, name))
        confirmed = False
        tries = 0
        busy = False
        if held is not None and not held.lock.acquire(blocking=False):
            held.lock.acquire()  # another suggest of this study just took the proposal
            busy = True
        try:
            if busy:
                self._prepare(name, project, count=count, client_id=client_id)
            while True:
                try:
                    out = attempt(confirmed and tries >= _OPTIMISTIC_TRIES)
                except _Stale as stale:
                    if stale.slot is not held:
                        if held is not None:  # the study was deleted and created again
                            held.lock.release()
                        held = stale.slot
                        held.lock.acquire()
                    confirmed = True
                    tries += 1
                    self._prepare(name, project, count=count, client_id=client_id)
                    continue
                if out is not None:
                    return out
                tries += 1  # this try abandoned silent trials (committed): read again
        finally:
            if held is not None:
                held.lock.release()

    def _suggest(
        self,
        s: Session,
        name: str,
        project: str,
        *,
        count: int,
        client_id: str | None,
        inline: bool,
    ) -> SuggestResult | None:
        """The write transaction of suggest.

        Returns None after abandoning silent trials of an expensive study (a new history: the
        caller starts again). Raises ``_Stale`` when an expensive designer has no proposal for
        the current history, unless ``inline`` (the last resort: compute it here).
        """
        study_row = self._study_row(s, name, project, lock=True)
        study = _study(study_row)
        sid = study_row.id
        study_changes: dict[str, Any] = {}
        now = self._now()

        # (1) Abandon silent running trials; their configurations go to the front of the queue.
        if study.heartbeat_grace_s is not None:
            cutoff = now - timedelta(seconds=study.heartbeat_grace_s)
            expired = s.execute(_ABANDON_SILENT, {"b_sid": sid, "b_cutoff": cutoff}).all()
            if expired:
                expired.sort(key=lambda r: r.number)
                s.execute(
                    insert(_queue),
                    [
                        {
                            "study_id": sid,
                            "params": r.params,
                            "priority": _PRIORITY_REQUEUED,
                            "source_trial_id": r.id,
                            "created_at": now,
                        }
                        for r in expired
                    ],
                )
                if not inline and self._slot(study, project).expensive:
                    return None

        # (2) The same client asking again gets its running trials back.
        if client_id is not None:
            rows = s.execute(
                select(*_TRIAL_COLUMNS, _T.id, _T.has_intermediate)
                .where(
                    _T.study_id == sid,
                    _T.client_id == client_id,
                    _T.state == _RUNNING,
                )
                .order_by(_T.number)
            ).all()
            if rows:
                s.execute(
                    update(_trials).where(_T.id.in_([r.id for r in rows])).values(heartbeat_at=now)
                )
                trials = self._trials_with_intermediate(s, rows, heartbeat_at=now)
                return SuggestResult(
                    trials=trials,
                    study_state=study.state,
                    designer=study.designer_info.get("designer"),
                )

        # (3) Paused and completed studies hand out nothing.
        if study.state != StudyState.ACTIVE:
            raise StudyNotActiveError(
                f"study {name!r} is {study.state.value}; it hands out trials only when active"
                + (" (resume it first)" if study.state == StudyState.PAUSED else ""),
                details={"state": study.state.value},
            )

        n_running, n_abandoned = self._running_abandoned(s, sid)
        n_total = study_row.n_trials

        # (4) The budget counts every trial that was not abandoned.
        if study.max_trials is not None:
            remaining = study.max_trials - (n_total - n_abandoned)
            if remaining <= 0:
                state = study.state
                if n_running == 0:
                    state = StudyState.COMPLETED
                    s.execute(
                        update(_studies)
                        .where(_S.id == sid)
                        .values(state=state.value, updated_at=now)
                    )
                return SuggestResult(
                    trials=[], study_state=state, designer=study.designer_info.get("designer")
                )
            count = min(count, remaining)

        # (5) Queued configurations first (requeued ones ahead of the user's), then the designer.
        queued = s.execute(_POP_QUEUE, {"b_sid": sid, "b_limit": count}).all()
        queued.sort(key=lambda r: (-r.priority, r.id))
        configs: list[Params] = [dict(r.params) for r in queued]

        designer_name = study.designer_info.get("designer")
        if len(configs) < count:
            n_new = count - len(configs)
            slot = self._slot(study, project)
            key: _HistoryKey = (
                n_total,
                n_running,
                n_abandoned,
                tuple(r.id for r in queued),
                n_new,
            )
            plan = slot.plan_for(key)
            if plan is None:
                if slot.expensive and not inline:
                    raise _Stale(slot)
                loaded: list[tuple[list[Trial], list[Params]]] = []

                def history() -> tuple[list[Trial], list[Params]]:
                    if not loaded:
                        loaded.append(self._history(s, sid, curves=_wants_curves(study)))
                    return loaded[0]

                completed = _LazySequence(n_total - n_running - n_abandoned, lambda: history()[0])
                pending_loaded = _LazySequence(n_running, lambda: history()[1])
                pending: Sequence[Params] = (
                    _Chain(pending_loaded, configs) if configs else pending_loaded
                )
                with slot.lock:
                    plan = slot.plan_for(key) or self._propose(
                        slot, study, key, completed=completed, pending=pending
                    )
            configs.extend(plan.configs)
            designer_name = plan.info.get("designer", study.algorithm)
            if plan.info != study.designer_info:
                study_changes["designer_info"] = plan.info

        # (6) New running trials, numbered on from the study's counter.
        new_rows = [
            {
                "study_id": sid,
                "number": n_total + i,
                "state": _RUNNING,
                "params": p,
                "values": None,
                "client_id": client_id,
                "error": None,
                "metadata": {},
                "has_intermediate": False,
                "created_at": now,
                "completed_at": None,
                "heartbeat_at": now,
            }
            for i, p in enumerate(configs)
        ]
        if new_rows:
            s.execute(_INSERT_TRIAL, new_rows)
        s.execute(
            _UPDATE_STUDY,
            {"b_sid": sid, "n_trials": n_total + len(new_rows), "updated_at": now, **study_changes},
        )
        trials = [
            Trial(
                number=r["number"],
                state=TrialState.RUNNING,
                params=r["params"],
                client_id=client_id,
                created_at=now,
                heartbeat_at=now,
            )
            for r in new_rows
        ]
        return SuggestResult(trials=trials, study_state=study.state, designer=designer_name)

    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> Trial:
        """Complete a trial with its metrics: every objective, optionally constraint metrics.

        A late result for an abandoned trial is accepted (and its requeued configuration
        withdrawn if it was not handed out again), unless its configuration was handed out
        again and counting it would exceed ``max_trials``: then it is refused with
        ``TrialFinishedError`` and the trial stays abandoned. Nothing is stored unless all is
        valid.

        Args:
            name: the study.
            number: the trial's number in the study.
            values: metric -> finite number; every objective, optionally constraint metrics.
            metadata: JSON object merged into the trial's metadata.

        Raises:
            ValidationError: a missing objective, an unknown metric, a non-finite value, or
                metadata that is not a JSON object.
            NotFoundError: unknown study or trial.
            TrialFinishedError: the trial is already completed, failed or pruned, or is an
                abandoned trial whose late result no longer fits the budget (see above).
        """
        number = _check_number(number)
        meta = _check_metadata(metadata)

        def work(s: Session, attempt: int) -> Trial:
            row = self._trial_with_study(s, name, number, project)
            clean = _check_values(row, values)
            if row.state in _FINISHED:
                # A retry after a commit whose acknowledgement was lost: same result, success.
                if attempt and row.state == _COMPLETED and row.values == clean:
                    return self._trial_from_joined(s, row)
                raise _finished(name, number, row.state)
            now = self._now()
            merged = {**row.meta, **meta} if meta else row.meta
            changes = {
                "state": _COMPLETED,
                "values": clean,
                "completed_at": now,
                "metadata": merged,
            }
            self._finish(s, row, changes)
            self._maybe_complete_study(s, row, now)
            changed.append(row)
            return self._trial_from_joined(s, row, **changes)

        changed: list[Row[Any]] = []
        trial = self._db.run(work, write=True)
        if changed:
            self._precompute_soon(name, project, changed[-1])
        return trial

    def report(
        self,
        name: str,
        number: int,
        *,
        step: int,
        value: float,
        project: str = DEFAULT_PROJECT,
    ) -> ReportResult:
        """Store an intermediate value (re-reporting a step overwrites it); refreshes the
        heartbeat. ``should_stop`` says whether the study's stopper wants the trial stopped.

        Values reported are of the study's *primary* objective (the first one declared); the
        stopper compares them in that objective's direction. When the stopper says stop, the
        trial ends here as ``pruned`` with the value of its latest step as its value for the
        primary objective (``values={primary: last}``), in the same transaction; the worker
        should stop, and a later observe or report on it raises ``TrialFinishedError``. Pruned
        trials count toward ``max_trials`` but never toward ``best_trials``.

        Args:
            name: the study.
            number: the trial's number.
            step: an integer >= 0 (epoch, boosting round, ...).
            value: a finite number.

        Raises:
            ValidationError: a negative or non-integer step, a non-finite value.
            NotFoundError: unknown study or trial.
            TrialFinishedError: the trial is already completed, failed or pruned.
        """
        number = _check_number(number)
        if (
            isinstance(step, bool)
            or not isinstance(step, int | np.integer)
            or not (0 <= int(step) <= _MAX_INT64)
        ):
            raise ValidationError(f"step must be an integer >= 0, got {step!r}", field="step")
        step = int(step)
        value = _finite(value, field="value", what="value")

        def work(s: Session, _attempt: int) -> ReportResult:
            row = self._trial_with_study(s, name, number, project)
            stopper = row.study_stopper
            if stopper is not None and stopper.get("type") == "none":
                stopper = None
            state = row.state
            if stopper is not None and self._db.is_postgres:
                # SQLite's write transaction already excludes every other writer.
                state = s.scalar(_LOCK_STUDY_TRIAL_STATE, {"b_id": row.id}) or "deleted"
            if state in _FINISHED or state == "deleted":
                raise _finished(name, number, state)
            now = self._now()
            self._upsert_intermediate(s, row.id, step, value)
            s.execute(
                _UPDATE_TRIAL,
                {"b_id": row.id, "heartbeat_at": now, "has_intermediate": True},
            )
            if stopper is None:
                return ReportResult(should_stop=False)
            stop = self._should_stop(s, row, stopper, now)
            if stop:
                changed.append(row)
            return ReportResult(should_stop=stop)

        changed: list[Row[Any]] = []
        result = self._db.run(work, write=True)
        if changed:
            self._precompute_soon(name, project, changed[-1])
        return result

    def fail(self, name: str, number: int, *, reason: str, project: str = DEFAULT_PROJECT) -> Trial:
        """Mark a trial failed.

        Args:
            name: the study.
            number: the trial's number.
            reason: why (kept to its first 10,000 characters).

        Raises:
            NotFoundError: unknown study or trial.
            TrialFinishedError: the trial is already completed, failed or pruned.
        """
        number = _check_number(number)
        # PostgreSQL text cannot hold NUL characters.
        reason = str(reason)[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")

        def work(s: Session, attempt: int) -> Trial:
            row = self._trial_with_study(s, name, number, project)
            if row.state in _FINISHED:
                if attempt and row.state == TrialState.FAILED.value and row.error == reason:
                    return self._trial_from_joined(s, row)
                raise _finished(name, number, row.state)
            now = self._now()
            changes = {"state": TrialState.FAILED.value, "error": reason, "completed_at": now}
            self._finish(s, row, changes)
            self._maybe_complete_study(s, row, now)
            changed.append(row)
            return self._trial_from_joined(s, row, **changes)

        changed: list[Row[Any]] = []
        trial = self._db.run(work, write=True)
        if changed:
            self._precompute_soon(name, project, changed[-1])
        return trial

    def heartbeat(self, name: str, number: int, *, project: str = DEFAULT_PROJECT) -> Trial:
        """Tell the service a running trial is alive (it is not abandoned while it beats).

        Args:
            name: the study.
            number: the trial's number.

        Raises:
            NotFoundError: unknown study or trial.
            TrialFinishedError: the trial is already completed, failed or pruned.
        """
        number = _check_number(number)

        def work(s: Session, _attempt: int) -> Trial:
            row = self._trial_with_study(s, name, number, project)
            if row.state in _FINISHED:
                raise _finished(name, number, row.state)
            now = self._now()
            s.execute(_UPDATE_TRIAL, {"b_id": row.id, "heartbeat_at": now})
            return self._trial_from_joined(s, row, heartbeat_at=now)

        return self._db.run(work, write=True)

    def enqueue(
        self, name: str, params: Mapping[str, Any], *, project: str = DEFAULT_PROJECT
    ) -> QueuedConfig:
        """Queue a configuration of the user's to be handed out before the designer's.

        Args:
            name: the study.
            params: a configuration of the study's space.

        Raises:
            ValidationError: ``params`` outside the space (naming the parameter).
            NotFoundError: unknown study.
        """

        def work(s: Session, _attempt: int) -> QueuedConfig:
            row = self._study_row(s, name, project)
            clean = _study(row).search_space().validate_params(params)
            qid = s.scalar(
                insert(_queue)
                .values(
                    study_id=row.id,
                    params=clean,
                    priority=_PRIORITY_USER,
                    source_trial_id=None,
                    created_at=self._now(),
                )
                .returning(_Q.id)
            )
            assert qid is not None
            return QueuedConfig(id=qid, params=clean)

        return self._db.run(work, write=True)

    def get_trial(self, name: str, number: int, *, project: str = DEFAULT_PROJECT) -> Trial:
        """One trial, with its intermediate values.

        Args:
            name: the study.
            number: the trial's number.

        Raises:
            NotFoundError: unknown study or trial.
        """
        number = _check_number(number)

        def work(s: Session, _attempt: int) -> Trial:
            return self._trial_from_joined(s, self._trial_with_study(s, name, number, project))

        return self._db.run(work, write=False)

    def list_trials(
        self,
        name: str,
        *,
        state: TrialState | None = None,
        offset: int = 0,
        limit: int = 100,
        project: str = DEFAULT_PROJECT,
    ) -> Page[Trial]:
        """A study's trials ordered by number, with their intermediate values.

        Args:
            name: the study.
            state: only trials in this state.
            offset: how many to skip.
            limit: at most this many (1 to 1000).

        Raises:
            ValidationError: a bad state, offset or limit.
            NotFoundError: unknown study.
        """
        state_v = _trial_state(state) if state is not None else None
        _check_page(offset, limit)

        def work(s: Session, _attempt: int) -> Page[Trial]:
            sid = self._study_id(s, name, project)
            where = [_T.study_id == sid]
            if state_v is not None:
                where.append(_T.state == state_v.value)
            total = s.scalar(select(func.count()).select_from(_trials).where(*where)) or 0
            rows = s.execute(
                select(*_TRIAL_COLUMNS, _T.id, _T.has_intermediate)
                .where(*where)
                .order_by(_T.number)
                .offset(offset)
                .limit(limit)
            ).all()
            return Page[Trial](
                items=self._trials_with_intermediate(s, rows),
                total=total,
                offset=offset,
                limit=limit,
            )

        return self._db.run(work, write=False)

    def best_trials(self, name: str, *, project: str = DEFAULT_PROJECT) -> list[Trial]:
        """The best completed feasible trial (one objective) or the Pareto-optimal completed
        feasible trials (several objectives, ordered by number); empty when there is none.

        Args:
            name: the study.

        Raises:
            NotFoundError: unknown study.
        """

        def work(s: Session, _attempt: int) -> list[Trial]:
            study = _study(self._study_row(s, name, project))
            rows = s.execute(
                select(_T.number, _T["values"]).where(
                    _T.study_id == study.id, _T.state == _COMPLETED
                )
            ).all()
            best = _best_numbers(study, [(r.number, r.values or {}) for r in rows])
            if not best:
                return []
            full = s.execute(
                select(*_TRIAL_COLUMNS, _T.id, _T.has_intermediate)
                .where(_T.study_id == study.id, _T.number.in_(best))
                .order_by(_T.number)
            ).all()
            return self._trials_with_intermediate(s, full)

        return self._db.run(work, write=False)

    # ------------------------------------------------------------------------------------------
    # helpers (all run inside a transaction)
    # ------------------------------------------------------------------------------------------
    def _study_row(self, s: Session, name: str, project: str, *, lock: bool = False) -> Row[Any]:
        """The study's row; ``lock`` holds it (``FOR UPDATE``) to the end of the transaction
        on PostgreSQL, where SQLite's write transaction already excludes every other writer."""
        _check_name(name)
        stmt = _SELECT_STUDY_FOR_UPDATE if lock and self._db.is_postgres else _SELECT_STUDY
        row = s.execute(stmt, {"b_project": project, "b_name": name}).one_or_none()
        if row is None:
            raise _study_not_found(name)
        return row

    def _study_id(self, s: Session, name: str, project: str) -> int:
        _check_name(name)
        sid = s.scalar(select(_S.id).where(_S.project == project, _S.name == name))
        if sid is None:
            raise _study_not_found(name)
        return sid

    def _trial_with_study(self, s: Session, name: str, number: int, project: str) -> Row[Any]:
        """The trial's row with what observe needs of its study, in one query."""
        _check_name(name)
        row = s.execute(
            _SELECT_TRIAL_WITH_STUDY, {"b_project": project, "b_name": name, "b_number": number}
        ).one_or_none()
        if row is None:
            sid = self._study_id(s, name, project)  # raises for an unknown study
            n = s.scalar(select(_S.n_trials).where(_S.id == sid))
            raise NotFoundError(
                f"study {name!r} has no trial {number}; its trials are numbered 0 to {(n or 0) - 1}"
                if n
                else f"study {name!r} has no trials yet (asked for {number})",
                details={"field": "number", "study": name, "number": number},
            )
        return row

    def _finish(self, s: Session, row: Row[Any], changes: dict[str, Any]) -> str:
        """Move a running or abandoned trial to a finished state; returns the state it had.

        Guarded by the state in the UPDATE itself, so a concurrent finish or abandonment
        (PostgreSQL) is seen rather than overwritten.
        """
        for prior in (_RUNNING, _ABANDONED):
            res = s.execute(_UPDATE_TRIAL_IN_STATE, {"b_id": row.id, "b_state": prior, **changes})
            if res.rowcount:
                if prior == _ABANDONED:
                    # A late result: withdraw its requeued configuration if still queued.
                    s.execute(delete(_queue).where(_Q.source_trial_id == row.id))
                    if row.study_max_trials is not None:
                        self._check_late_budget(s, row)
                return prior
        current = s.scalar(select(_T.state).where(_T.id == row.id))
        raise _finished(None, row.number, current or "deleted")

    def _check_late_budget(self, s: Session, row: Row[Any]) -> None:
        """A late result for an abandoned trial: its abandonment freed its place in the budget.
        If its configuration was handed out again (requeued configurations go first, so only
        then), a newer trial took that place and counting this one again would exceed
        ``max_trials``: refuse it (the transaction rolls back and the trial stays abandoned);
        the newer trial evaluates the same configuration.

        Under the study lock (PostgreSQL), so a concurrent suggest cannot take the same place.
        """
        stmt = select(_S.n_trials).where(_S.id == row.study_id)
        n_trials = s.scalar(stmt.with_for_update() if self._db.is_postgres else stmt) or 0
        _, n_abandoned = self._running_abandoned(s, row.study_id)  # this one counted already
        max_trials = row.study_max_trials
        if n_trials - n_abandoned > max_trials:
            raise TrialFinishedError(
                f"trial {row.number} was abandoned (no heartbeat within the grace period) and "
                "its configuration was handed out again as a newer trial, which took its place "
                f"in the budget of {max_trials} trials; this late result is not recorded, the "
                "newer trial evaluates the same configuration",
                details={
                    "field": "number",
                    "number": row.number,
                    "state": _ABANDONED,
                    "max_trials": max_trials,
                },
            )

    def _maybe_complete_study(self, s: Session, row: Row[Any], now: datetime) -> None:
        """Complete the study once its budget is used and no trial is running."""
        max_trials = row.study_max_trials
        if max_trials is None or row.study_n_trials < max_trials:
            return
        if row.study_state != StudyState.ACTIVE.value:
            return
        n_running, n_abandoned = self._running_abandoned(s, row.study_id)
        if n_running == 0 and row.study_n_trials - n_abandoned >= max_trials:
            s.execute(
                update(_studies)
                .where(_S.id == row.study_id, _S.state == StudyState.ACTIVE.value)
                .values(state=StudyState.COMPLETED.value, updated_at=now)
            )

    def _running_abandoned(self, s: Session, sid: int) -> tuple[int, int]:
        counts = dict(s.execute(_COUNT_RUNNING_ABANDONED, {"b_sid": sid}).all())
        return counts.get(_RUNNING, 0), counts.get(_ABANDONED, 0)

    def _history(
        self, s: Session, sid: int, *, curves: bool = False
    ) -> tuple[list[Trial], list[Params]]:
        """The finished trials and the running trials' configurations, in one statement: on
        PostgreSQL two would see two snapshots, and a trial finishing between them would be
        in neither (a designer would then repeat its configuration).

        With ``curves``, finished trials carry their intermediate values (multi-fidelity
        designers learn from pruned trials' curves). A finished trial's curve no longer
        changes, so this needs no snapshot of its own.
        """
        rows = s.execute(
            select(
                _T.id,
                _T.number,
                _T.state,
                _T.params,
                _T["values"],
                _T.created_at,
                _T.completed_at,
            )
            .where(_T.study_id == sid, _T.state.in_((*_FINISHED, _RUNNING)))
            .order_by(_T.number)
        ).all()
        inter = self._intermediate(s, [r.id for r in rows if r.state != _RUNNING]) if curves else {}
        completed = [
            Trial(
                number=r.number,
                state=r.state,
                params=r.params,
                values=r.values,
                intermediate=inter.get(r.id, []),
                created_at=r.created_at,
                completed_at=r.completed_at,
            )
            for r in rows
            if r.state != _RUNNING
        ]
        return completed, [r.params for r in rows if r.state == _RUNNING]

    def _upsert_intermediate(self, s: Session, trial_id: int, step: int, value: float) -> None:
        if self._db.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(_ivalues).values(trial_id=trial_id, step=step, value=value)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["trial_id", "step"], set_={"value": stmt.excluded.value}
            )
        )

    def _should_stop(
        self, s: Session, row: Row[Any], stopper: Mapping[str, Any], now: datetime
    ) -> bool:
        """Ask the study's stopper about the trial that just reported; prune it if so.

        Runs under the study lock (see ``report``), after the new value was stored, so the
        curves include it and every value an earlier report committed.
        """
        primary, direction = next(iter(row.study_objectives.items()))
        curves: dict[int, tuple[str, dict[int, float]]] = {}
        for number, state, step, value in s.execute(_SELECT_CURVES, {"b_sid": row.study_id}):
            curves.setdefault(number, (state, {}))[1][step] = value
        state, values = curves.pop(row.number)
        mine = Curve(number=row.number, state=TrialState(state), values=values)
        others = [Curve(number=n, state=TrialState(st), values=v) for n, (st, v) in curves.items()]
        if not make_stopper(stopper).should_stop(mine, others, direction=Direction(direction)):
            return False
        last_step = mine.last_step
        assert last_step is not None
        changes = {
            "state": _PRUNED,
            "values": {primary: values[last_step]},
            "completed_at": now,
        }
        self._finish(s, row, changes)
        self._maybe_complete_study(s, row, now)
        return True

    def _intermediate(self, s: Session, trial_ids: list[int]) -> dict[int, list[Measurement]]:
        out: dict[int, list[Measurement]] = {}
        if not trial_ids:
            return out
        for tid, step, value in s.execute(
            select(_I.trial_id, _I.step, _I.value)
            .where(_I.trial_id.in_(trial_ids))
            .order_by(_I.trial_id, _I.step)
        ):
            out.setdefault(tid, []).append(Measurement(step=step, value=value))
        return out

    def _trials_with_intermediate(
        self, s: Session, rows: Sequence[Row[Any]], **changes: Any
    ) -> list[Trial]:
        inter = self._intermediate(s, [r.id for r in rows if r.has_intermediate])
        return [_trial(r, intermediate=inter.get(r.id, []), **changes) for r in rows]

    def _trial_from_joined(self, s: Session, row: Row[Any], **changes: Any) -> Trial:
        inter = self._intermediate(s, [row.id]).get(row.id, []) if row.has_intermediate else []
        return _trial(row, intermediate=inter, **changes)

    def _slot(self, study: Study, project: str) -> _Slot:
        """The study's designer slot in this process. Keyed by creation time too: SQLite may
        reuse a deleted study's id; a study's space, objectives and algorithm never change."""
        key = (study.id, study.created_at)
        with self._designers_lock:
            hit = self._designers.get(key)
            if hit is not None:
                self._designers.move_to_end(key)
                return hit
        slot = _Slot(study)
        with self._designers_lock:
            slot = self._designers.setdefault(key, slot)
            while len(self._designers) > _DESIGNER_CACHE_SIZE:
                self._designers.popitem(last=False)
            if slot.expensive:
                self._slot_hints[(project, study.name)] = slot
                while len(self._slot_hints) > _DESIGNER_CACHE_SIZE:
                    self._slot_hints.pop(next(iter(self._slot_hints)))
        return slot

    def _propose(
        self,
        slot: _Slot,
        study: Study,
        key: _HistoryKey,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
    ) -> _Plan:
        """Run the designer (the caller holds ``slot.lock``) and keep its proposal in the slot."""
        n_new = key[4]
        try:
            proposed = slot.designer.suggest(
                slot.problem, completed=completed, pending=pending, count=n_new, seed=study.seed
            )
        except AutotuneError:
            raise
        except Exception as e:
            raise AutotuneError(
                f"designer {study.algorithm!r} failed on study {study.name!r}: {e}"
            ) from e
        if len(proposed) != n_new:
            raise AutotuneError(
                f"designer {study.algorithm!r} returned {len(proposed)} configurations "
                f"instead of {n_new}"
            )
        configs: list[Params] = []
        for p in proposed:
            try:
                configs.append(slot.problem.space.validate_params(p))
            except ValidationError as e:
                raise AutotuneError(
                    f"designer {study.algorithm!r} returned an invalid configuration "
                    f"{p!r}: {e.message}"
                ) from e
        plan = _Plan(key=key, configs=configs, info=slot.designer.describe())
        slot.plan = plan
        return plan

    def _precompute_soon(self, name: str, project: str, row: Row[Any]) -> None:
        """After a trial of study ``name`` finished: if its designer is expensive, compute the
        next suggestion in the background (at most one waiting job per study: the job reads
        the history when it starts, so later changes are in it)."""
        if not self._precompute:
            return
        with self._designers_lock:
            slot = self._designers.get((row.study_id, row.study_created_at))
        expensive = (
            slot.expensive if slot is not None else row.study_algorithm in (_EXPENSIVE_ALGORITHMS)
        )
        if not expensive:
            return
        with self._precompute_lock:
            if self._closed or (project, name) in self._scheduled:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=_PRECOMPUTE_WORKERS, thread_name_prefix="autotune-precompute"
                )
            self._scheduled.add((project, name))
            future = self._pool.submit(self._precompute_job, name, project)
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._precompute_lock:
            self._futures.discard(future)

    def _precompute_job(self, name: str, project: str) -> None:
        with self._precompute_lock:
            self._scheduled.discard((project, name))
            if self._closed:
                return
        try:
            self._prepare(name, project, count=1, client_id=None)
        except NotFoundError:
            pass  # deleted meanwhile
        except Exception:
            # Only an optimisation: the next suggest computes (and reports) it again.
            log.warning("precomputing the next suggestion of study %r failed", name, exc_info=True)

    def _prepare(self, name: str, project: str, *, count: int, client_id: str | None) -> None:
        """Compute the proposal that a suggest of ``count`` would need now, with no transaction
        open, and keep it in the study's slot (the optimistic half of suggest).

        Does nothing when suggest would not ask the designer (inactive study, a client with
        running trials, budget used, the queue enough) or the proposal is already there.
        """

        def read(s: Session, _attempt: int) -> tuple[Any, ...] | None:
            row = self._study_row(s, name, project)
            study = _study(row)
            sid = row.id
            if study.state != StudyState.ACTIVE:
                return None
            slot = self._slot(study, project)
            if not slot.expensive:
                return None
            if client_id is not None and s.scalar(
                select(_T.id)
                .where(_T.study_id == sid, _T.client_id == client_id, _T.state == _RUNNING)
                .limit(1)
            ):
                return None
            n_running, n_abandoned = self._running_abandoned(s, sid)
            n_total = row.n_trials
            want = count
            if study.max_trials is not None:
                want = min(want, study.max_trials - (n_total - n_abandoned))
            queued = s.execute(_PEEK_QUEUE, {"b_sid": sid, "b_limit": max(want, 0)}).all()
            n_new = want - len(queued)
            if n_new <= 0:
                return None
            key: _HistoryKey = (n_total, n_running, n_abandoned, tuple(r.id for r in queued), n_new)
            if slot.plan_for(key) is not None:
                return None
            completed, running = self._history(s, sid, curves=_wants_curves(study))
            pending = [*running, *(dict(r.params) for r in queued)]
            if self._db.is_postgres:
                # Read committed: each statement saw its own snapshot. The version only moves
                # forward, so the same version after the reads means they all saw that one.
                n_again = s.scalar(select(_S.n_trials).where(_S.id == sid))
                if (n_again, *self._running_abandoned(s, sid)) != key[:3]:
                    return None
            return slot, study, key, completed, pending

        job = self._db.run(read, write=False)
        if job is None:
            return
        slot, study, key, completed, pending = job
        with slot.lock:
            if slot.plan_for(key) is None:
                self._propose(slot, study, key, completed=completed, pending=pending)


class ProjectStudies:
    """A :class:`StudyService` seen from one project: the same methods with ``project`` bound.

    What the API hands its routes (and the figure cache), so that no route can forget the
    project of the request. Costs nothing to make: it shares the service.

    Args:
        service: the process-wide service.
        project: the project every call runs in.
    """

    __slots__ = ("service", "project")

    def __init__(self, service: StudyService, project: str) -> None:
        self.service = service
        self.project = project

    @property
    def db(self) -> Database:
        return self.service.db

    def create_study(self, spec: StudySpec | Mapping[str, Any]) -> Study:
        return self.service.create_study(spec, project=self.project)

    def get_study(self, name: str) -> Study:
        return self.service.get_study(name, project=self.project)

    def list_studies(
        self, *, state: StudyState | None = None, offset: int = 0, limit: int = 50
    ) -> Page[Study]:
        return self.service.list_studies(
            state=state, offset=offset, limit=limit, project=self.project
        )

    def set_study_state(self, name: str, state: StudyState) -> Study:
        return self.service.set_study_state(name, state, project=self.project)

    def delete_study(self, name: str) -> None:
        self.service.delete_study(name, project=self.project)

    def suggest(self, name: str, *, count: int = 1, client_id: str | None = None) -> SuggestResult:
        return self.service.suggest(name, count=count, client_id=client_id, project=self.project)

    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Trial:
        return self.service.observe(name, number, values, metadata=metadata, project=self.project)

    def report(self, name: str, number: int, *, step: int, value: float) -> ReportResult:
        return self.service.report(name, number, step=step, value=value, project=self.project)

    def fail(self, name: str, number: int, *, reason: str) -> Trial:
        return self.service.fail(name, number, reason=reason, project=self.project)

    def heartbeat(self, name: str, number: int) -> Trial:
        return self.service.heartbeat(name, number, project=self.project)

    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig:
        return self.service.enqueue(name, params, project=self.project)

    def get_trial(self, name: str, number: int) -> Trial:
        return self.service.get_trial(name, number, project=self.project)

    def list_trials(
        self,
        name: str,
        *,
        state: TrialState | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[Trial]:
        return self.service.list_trials(
            name, state=state, offset=offset, limit=limit, project=self.project
        )

    def best_trials(self, name: str) -> list[Trial]:
        return self.service.best_trials(name, project=self.project)


# ----------------------------------------------------------------------------------------------
# module helpers
# ----------------------------------------------------------------------------------------------
class _LazySequence(Sequence[T]):
    """A sequence whose length is known up front and whose items are loaded on first use.

    Designers that need only the history's size (random, Sobol) then cost no query.
    """

    def __init__(self, n: int, load: Callable[[], list[T]]) -> None:
        self._n = n
        self._load = load
        self._items: list[T] | None = None

    def _get(self) -> list[T]:
        if self._items is None:
            self._items = self._load()
            self._n = len(self._items)
        return self._items

    def __len__(self) -> int:
        return self._n if self._items is None else len(self._items)

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._get())


class _Chain(Sequence[T]):
    """Two sequences read as one, without loading the first to know the length."""

    def __init__(self, a: Sequence[T], b: Sequence[T]) -> None:
        self._a, self._b = a, b
        self._items: list[T] | None = None

    def __len__(self) -> int:
        return len(self._a) + len(self._b)

    def __getitem__(self, i: Any) -> Any:
        if self._items is None:
            self._items = [*self._a, *self._b]
        return self._items[i]

    def __iter__(self) -> Iterator[T]:
        yield from self._a
        yield from self._b


def _study(row: Any, **changes: Any) -> Study:
    if changes:
        row = _Overlay(row, changes)
    return Study(
        id=row.id,
        name=row.name,
        space=row.space,
        objectives=row.objectives,
        constraints={k: (op, b) for k, (op, b) in row.constraints.items()},
        max_trials=row.max_trials,
        algorithm=row.algorithm,
        seed=row.seed,
        heartbeat_grace_s=row.heartbeat_grace_s,
        stopper=row.stopper,
        metadata=row.meta,
        state=row.state,
        n_trials=row.n_trials,
        designer_info=row.designer_info,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _trial(row: Any, *, intermediate: list[Measurement] | None = None, **changes: Any) -> Trial:
    data = {
        "number": row.number,
        "state": row.state,
        "params": row.params,
        "values": row.values,
        "client_id": row.client_id,
        "error": row.error,
        "metadata": row.meta,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
        "heartbeat_at": row.heartbeat_at,
        "intermediate": intermediate or [],
    }
    data.update(changes)
    return Trial(**data)


class _Overlay:
    """A row with some attributes replaced (what a row looks like after an UPDATE)."""

    def __init__(self, row: Any, changes: dict[str, Any]) -> None:
        self._row, self._changes = row, changes

    def __getattr__(self, name: str) -> Any:
        if name in self._changes:
            return self._changes[name]
        return getattr(self._row, name)


# Stoppers whose pruned trials leave learning curves worth modelling (multi-fidelity).
_FIDELITY_STOPPERS = frozenset({"asha", "hyperband"})


def _wants_curves(study: Study) -> bool:
    """Whether the study's designer is given the finished trials' intermediate values."""
    stopper = (study.stopper or {}).get("type")
    return study.algorithm == "bohb" or (
        study.algorithm == "auto" and stopper in _FIDELITY_STOPPERS
    )


def _study_not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"no study named {name!r}; list the studies to see their names",
        details={"field": "name", "study": name},
    )


def _check_name(name: Any) -> None:
    """No study can have a name outside the pattern: answer without asking the database."""
    if not isinstance(name, str) or not STUDY_NAME_PATTERN.match(name):
        raise _study_not_found(str(name))


def _finished(name: str | None, number: int, state: str) -> TrialFinishedError:
    where = f" of study {name!r}" if name else ""
    return TrialFinishedError(
        f"trial {number}{where} is already {state} and cannot change any more",
        details={"field": "number", "number": number, "state": state},
    )


def _check_number(number: Any) -> int:
    if isinstance(number, bool) or not isinstance(number, int | np.integer) or number < 0:
        raise ValidationError(
            f"trial number must be an integer >= 0, got {number!r}", field="number"
        )
    number = int(number)
    if number > _MAX_INT64:
        raise NotFoundError(f"no trial {number}", details={"field": "number", "number": number})
    return number


def _check_page(offset: Any, limit: Any) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _MAX_INT64:
        raise ValidationError(f"offset must be an integer >= 0, got {offset!r}", field="offset")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValidationError(
            f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}, got {limit!r}", field="limit"
        )


def _study_state(state: Any) -> StudyState:
    try:
        return StudyState(state)
    except ValueError:
        raise ValidationError(
            f"study state must be one of {[s.value for s in StudyState]}, got {state!r}",
            field="state",
        ) from None


def _trial_state(state: Any) -> TrialState:
    try:
        return TrialState(state)
    except ValueError:
        raise ValidationError(
            f"trial state must be one of {[s.value for s in TrialState]}, got {state!r}",
            field="state",
        ) from None


def _finite(value: Any, *, field: str, what: str) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not ok:
        raise ValidationError(f"{what} must be a finite number, got {value!r}", field=field)
    x = float(value)
    if not math.isfinite(x):
        raise ValidationError(f"{what} must be a finite number, got {x}", field=field)
    return x


def _check_values(row: Row[Any], values: Any) -> dict[str, float]:
    """Every objective, only the study's metrics (objectives and constraint metrics), finite."""
    objectives: dict[str, str] = row.study_objectives
    constraints: dict[str, Any] = row.study_constraints
    if not isinstance(values, Mapping):
        raise ValidationError(
            "values must be an object mapping metric names to numbers, e.g. "
            f"{ {k: 0.0 for k in objectives} }",
            field="values",
        )
    known = [*objectives, *constraints]
    for k in values:
        if k not in objectives and k not in constraints:
            raise ValidationError(
                f"unknown metric {k!r}: this study's metrics are {known}",
                field=f"values.{k}",
                details={"allowed": known},
            )
    for k in objectives:
        if k not in values:
            raise ValidationError(
                f"objective {k!r} is missing; values must include every objective "
                f"({list(objectives)})",
                field=f"values.{k}",
            )
    return {
        k: _finite(values[k], field=f"values.{k}", what=f"metric {k!r}")
        for k in known
        if k in values
    }


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata must be an object", field="metadata")
    try:
        text = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError(
            f"metadata must be JSON (strings, finite numbers, lists, objects): {e}",
            field="metadata",
        ) from None
    if len(text) > MAX_METADATA_BYTES:
        raise ValidationError(
            f"metadata must serialize to at most {MAX_METADATA_BYTES} bytes", field="metadata"
        )
    return json.loads(text)


def _best_numbers(study: Study, rows: list[tuple[int, dict[str, Any]]]) -> list[int]:
    """Numbers of the best feasible trial (one objective) or of the Pareto front."""
    constraints = study.constraint_objects()
    names = list(study.objectives)
    signs = np.array([1.0 if study.objectives[k] == Direction.MINIMIZE else -1.0 for k in names])
    feasible: list[tuple[int, np.ndarray]] = []
    for number, values in rows:
        if not all(k in values for k in names):
            continue
        if not all(k in values and c.satisfied(values[k]) for k, c in constraints.items()):
            continue
        feasible.append((number, signs * np.array([values[k] for k in names], dtype=float)))
    if not feasible:
        return []
    if len(names) == 1:
        return [min(feasible, key=lambda t: (t[1][0], t[0]))[0]]
    # Pareto front (all objectives minimized after the sign flip). In lexicographic order a
    # point can only be dominated by one before it, and if by any then by one on the front.
    feasible.sort(key=lambda t: (tuple(t[1]), t[0]))
    front = np.empty((len(feasible), len(names)))  # (n_front, n_objectives), filled in order
    numbers: list[int] = []
    for number, y in feasible:
        f = front[: len(numbers)]
        if not np.any(np.all(f <= y, axis=1) & np.any(f < y, axis=1)):
            front[len(numbers)] = y
            numbers.append(number)
    return sorted(numbers)
