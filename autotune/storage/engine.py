"""Engines, sessions and transactions for SQLite and PostgreSQL.

``Database`` hands out one short transaction at a time through ``run(fn, write=...)``, which
retries transient failures (a dropped connection, a serialization failure, a deadlock) with
backoff and turns what is left into autotune errors, so no SQLAlchemy exception reaches callers.
A transaction is retried only when it certainly did not commit; on PostgreSQL a connection lost
during COMMIT is settled with ``txid_status``. Pooled connections are pinged before use, so a
connection the server dropped while idle is replaced rather than reported.

SQLite: WAL (readers never wait for the writer), ``busy_timeout``, foreign keys on, and writes
serialized twice: a process-level lock per database file (threads queue in Python instead of
spinning on SQLite's busy handler) and ``BEGIN IMMEDIATE`` (processes take the write lock at
the start of a transaction, so a read-then-write transaction never fails to upgrade its lock
with "database is locked").
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from autotune.errors import AutotuneError, ConflictError, UnavailableError, ValidationError

__all__ = ["Database", "normalize_url", "default_url", "DEFAULT_URL"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URL = "sqlite:///autotune.db"
# How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0
# Transient errors are retried this many times, backing off from RETRY_BASE_S doubling each time.
MAX_RETRIES = 5
RETRY_BASE_S = 0.02
RETRY_MAX_S = 1.0
# A dropped connection gets more tries: when many pooled connections die at once (a database
# restart, pg_terminate_backend), a retry can meet another one that had not yet noticed.
MAX_DISCONNECT_RETRIES = 10
# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available,
# shutdown / crash, too many connections. Class 08 (connection exceptions) is retried too.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})
# Backend terminated (pg_terminate_backend), crash shutdown, cannot connect now.
_SHUTDOWN_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# How long to wait for a dead backend's transaction to be settled before calling its outcome
# unknown (a terminated backend aborts it within milliseconds).
COMMIT_OUTCOME_WAIT_S = 5.0
# txid_current_if_assigned: no transaction id is forced on a transaction that wrote nothing.
_CURRENT_XID = text("SELECT txid_current_if_assigned()")
_XID_STATUS = text("SELECT txid_status(:xid)")

# Two processes opening a brand-new file race to switch it to WAL; the loser retries.
_WAL_SWITCH_TRIES = 20

_SQLITE_LOCKS: dict[str, threading.Lock] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


def default_url() -> str:
    return os.environ.get("AUTOTUNE_DB") or DEFAULT_URL


def normalize_url(url: str | URL | None) -> URL:
    """Parse ``url`` (``None`` -> ``AUTOTUNE_DB`` or the default SQLite file).

    ``postgresql://`` and ``postgres://`` use psycopg 3; other drivers are refused.
    """
    raw = default_url() if url is None else url
    try:
        u = make_url(raw)
    except ArgumentError as e:
        raise ValidationError(f"database URL {str(raw)!r} is not valid: {e}", field="db") from None
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return u.set(drivername="postgresql+psycopg")
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        return u.set(drivername="sqlite")
    raise ValidationError(
        f"unsupported database URL scheme {u.drivername!r}: use sqlite:///path.db or "
        "postgresql://user@host/db",
        field="db",
    )


def _sqlite_lock(database: str | None) -> threading.Lock:
    """The process-wide write lock of a SQLite file (a private one for an in-memory database)."""
    if not database or database == ":memory:":
        return threading.Lock()
    with _SQLITE_LOCKS_GUARD:
        return _SQLITE_LOCKS.setdefault(os.path.realpath(database), threading.Lock())


def _sqlite_engine(url: URL, *, immediate: bool, memory: bool) -> Engine:
    kw: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kw["poolclass"] = StaticPool
    elif immediate:
        # Writes are serialized by the process lock: one connection is all a writer needs.
        kw.update(pool_size=1, max_overflow=4)
    else:
        kw.update(pool_size=4, max_overflow=16)
    engine = create_engine(url, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN before a
        # SELECT, nor IMMEDIATE); SQLAlchemy's begin event below emits our own BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory:
                # Switching to WAL needs a moment of exclusive access; the busy timeout above
                # covers other connections, a few retries cover first-open races.
                for attempt in range(_WAL_SWITCH_TRIES):
                    try:
                        cur.execute("PRAGMA journal_mode = WAL")
                        break
                    except sqlite3.OperationalError as e:  # database is locked
                        if "locked" not in str(e) or attempt == _WAL_SWITCH_TRIES - 1:
                            raise
                        time.sleep(0.05)
                # FULL: an acknowledged observe survives a power cut, not only a crash.
                cur.execute("PRAGMA synchronous = FULL")
        finally:
            cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class Database:
    """The engines and transactions of one database URL. Thread-safe.

    Args:
        url: SQLAlchemy URL (see ``normalize_url``).
        pool_size: PostgreSQL connections kept open per process.
        max_overflow: extra PostgreSQL connections allowed under load.
    """

    def __init__(
        self, url: str | URL | None = None, *, pool_size: int = 5, max_overflow: int = 20
    ) -> None:
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        self._write_lock: threading.Lock | None = None
        if self.dialect == "sqlite":
            memory = self.url.database in (None, "", ":memory:")
            self._write_lock = _sqlite_lock(None if memory else self.url.database)
            self.write_engine = _sqlite_engine(self.url, immediate=True, memory=memory)
            # An in-memory database lives in one connection: reads share the writer's.
            self.read_engine = (
                self.write_engine
                if memory
                else _sqlite_engine(self.url, immediate=False, memory=False)
            )
            self._read_locked = memory
        else:
            self.write_engine = create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
            )
            self.read_engine = self.write_engine
            self._read_locked = False
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = (
            self._write_sessions
            if self.read_engine is self.write_engine
            else sessionmaker(self.read_engine, expire_on_commit=False)
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold this process's SQLite write lock (no-op on PostgreSQL)."""
        lock = self._write_lock
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S * 2):
            raise UnavailableError(
                "the SQLite database stayed busy with other writers; retry later",
                details={"retry_after_s": 1},
            )
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        """One transaction, committed at the end of the block, rolled back on error."""
        with self._session(write=write) as session, session.begin():
            yield session

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        """A session under the write lock where this database needs one; leaving the block
        without a commit rolls back (``close``)."""
        locked = write or self._read_locked
        sessions = self._write_sessions if write else self._read_sessions
        with self.write_lock() if locked else _nullcontext(), sessions() as session:
            yield session

    def run(self, fn: Callable[[Session, int], T], *, write: bool) -> T:
        """Run ``fn(session, attempt)`` in one transaction, retrying transient failures.

        A transaction is retried only when it certainly did not commit: a failure before the
        COMMIT rolled everything back. When the connection drops during the COMMIT itself
        (PostgreSQL), the outcome is read back with ``txid_status`` on a fresh connection: a
        committed transaction returns ``fn``'s result, an aborted one is retried, and one whose
        outcome cannot be learnt raises ``UnavailableError`` rather than risk applying it twice.
        ``fn`` must be safe to run again from the start; ``attempt`` counts the tries.
        """

        def once(attempt: int) -> T:
            with self._session(write=write) as session:
                session.begin()
                result = fn(session, attempt)
                # The transaction id, for reading the outcome of a COMMIT whose answer is lost
                # (NULL when the transaction wrote nothing: then either outcome is harmless).
                xid = session.execute(_CURRENT_XID).scalar() if write and self.is_postgres else None
                try:
                    session.commit()
                except (DBAPIError, DisconnectionError) as e:
                    if xid is None or not _is_disconnect(e):
                        raise  # the COMMIT was refused: nothing was stored, retry if transient
                    if self._commit_outcome(int(xid), e) == "committed":
                        log.warning("the COMMIT's answer was lost but it committed: %s", _short(e))
                        return result
                    raise  # aborted with its connection: retried from the start
                return result

        return self.retrying(once)

    def _commit_outcome(self, xid: int, error: BaseException) -> str:
        """``committed`` or ``aborted`` for a transaction whose COMMIT lost its connection.

        Raises:
            UnavailableError: the outcome could not be learnt (the database is unreachable, or
                the old backend still holds the transaction open after ``COMMIT_OUTCOME_WAIT_S``).
        """
        deadline = time.monotonic() + COMMIT_OUTCOME_WAIT_S
        status: str | None = None
        while True:
            try:
                with self.write_engine.connect() as conn:
                    status = conn.execute(_XID_STATUS, {"xid": xid}).scalar()
            except SQLAlchemyError:
                status = None
            if status in ("committed", "aborted"):
                return status
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    "the database connection dropped during COMMIT and whether the change was "
                    f"stored is unknown ({status or 'database unreachable'}); read it back "
                    "before retrying",
                    details={"db_error": _short(error), "xid": xid},
                ) from error
            time.sleep(RETRY_BASE_S)

    def retrying(self, fn: Callable[[int], T]) -> T:
        """Call ``fn(attempt)``, retrying transient database errors with backoff; any other
        database error becomes an autotune error (``UnavailableError`` for operational ones)."""
        attempt = 0
        while True:
            try:
                return fn(attempt)
            except AutotuneError:
                raise
            except (DBAPIError, DisconnectionError) as e:
                limit = MAX_DISCONNECT_RETRIES if _is_disconnect(e) else MAX_RETRIES
                if attempt < limit and self._is_transient(e):
                    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt) * (0.5 + random.random())
                    log.warning(
                        "transient database error (retry %d in %.3fs): %s",
                        attempt + 1,
                        delay,
                        _short(e),
                    )
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise self._translate(e) from e
            except SQLAlchemyError as e:
                raise self._translate(e) from e

    def _translate(self, e: SQLAlchemyError) -> AutotuneError:
        detail = {"db_error": _short(e)}
        if isinstance(e, IntegrityError):
            return ConflictError(
                f"the change conflicts with stored data: {_short(e)}", details=detail
            )
        if isinstance(e, DataError):
            return ValidationError(
                f"the database refused a value (out of range or bad characters): {_short(e)}",
                field="body",
                details=detail,
            )
        if isinstance(e, PoolTimeoutError):
            return UnavailableError(
                "no database connection became free in time; retry later", details=detail
            )
        if isinstance(e, (OperationalError, DisconnectionError)) or self._is_transient(e):
            return UnavailableError(f"the database is unavailable: {_short(e)}", details=detail)
        return AutotuneError(f"database error: {_short(e)}", details=detail)

    def _is_transient(self, e: Exception) -> bool:
        if isinstance(e, DisconnectionError):
            return True
        if not isinstance(e, DBAPIError):
            return False
        if e.connection_invalidated:
            return True
        orig = e.orig
        code = getattr(orig, "sqlstate", None)
        if code and (code in _TRANSIENT_SQLSTATES or code.startswith("08")):
            return True
        if isinstance(e, OperationalError):
            if self.is_sqlite:
                msg = str(orig).lower()
                return "locked" in msg or "busy" in msg
            # psycopg reports connection failures without a SQLSTATE.
            return code is None
        return False


def _is_disconnect(e: BaseException) -> bool:
    """The connection itself failed (as opposed to the database refusing the statement)."""
    if isinstance(e, DisconnectionError):
        return True
    if not isinstance(e, DBAPIError):
        return False
    code = getattr(e.orig, "sqlstate", None) or ""
    return e.connection_invalidated or code.startswith("08") or code in _SHUTDOWN_SQLSTATES


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def _short(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip().splitlines()
    return text[0][:500] if text else type(e).__name__
