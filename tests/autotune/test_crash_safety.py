"""Crash safety against real ``autotune serve`` processes and a real PostgreSQL (issue 9 item 4).

- SIGKILL the server while 8 HTTP clients suggest and observe, restart it on the same database
  (SQLite and PostgreSQL): the clients carry on without an error (the client retries through
  the restart), every observe that was acknowledged is stored with its value, trial numbers
  stay unique, the trials whose workers died with the server are abandoned by the heartbeat
  rule and their configurations evaluated again, and the study completes its budget.
- Terminate the server's PostgreSQL connections again and again under the same traffic: the
  storage layer reconnects and retries, so no client sees an error (clients do not retry here).
- The storage layer alone: a connection lost inside a transaction, or during its COMMIT, is
  retried when the transaction did not commit, and not applied twice when it did.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

import autotune
from autotune import StudyNotActiveError, StudyState, TrialFinishedError, TrialState
from autotune.client import Client
from autotune.storage import Database

pytestmark = pytest.mark.slow

N_CLIENTS = 8
# Long enough that a live worker's trial rarely goes silent that long (a pair takes
# milliseconds; on a loaded machine one that does is a late result, which the test allows for),
# short enough that the test waits little for the dead workers' trials to be abandoned.
HEARTBEAT_GRACE_S = 5.0
MAX_TRIALS = 64
KILL_AFTER_ACKS = 16  # well inside the budget: late results of in-flight trials still count
# Retries with backoff capped at 2 s: about a minute, enough to ride out a restart on a loaded
# machine (the server's imports and migrations take seconds).
CLIENT_RETRIES = 40
JOIN_TIMEOUT_S = 180.0
# Dropped connections: terminate the server's backends this many times, each after this many
# more acknowledged observes.
DROP_ROUNDS = 4
ACKS_PER_ROUND = 8


@dataclass
class Traffic:
    """What ``N_CLIENTS`` worker threads saw: acknowledged observes, trials handed out, errors."""

    acked: dict[int, float] = field(default_factory=dict)
    holder: dict[int, int] = field(default_factory=dict)  # trial number -> worker that got it
    dropped: dict[int, dict[str, Any]] = field(default_factory=dict)  # number -> params
    refused_late: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    duplicates: list[tuple[int, int, int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate() or bool(self.errors), timeout):
                raise AssertionError(f"timed out waiting for {what}")
        assert not self.errors, self.errors[:3]


def _objective(params: dict[str, Any]) -> float:
    return (params["x"] - 0.3) ** 2 + params["y"] / 100


def _run_workers(
    url: str,
    name: str,
    traffic: Traffic,
    *,
    retries: int,
    stop: threading.Event,
    drop_once: set[int] | None = None,
    crashed: threading.Event | None = None,
) -> list[threading.Thread]:
    """Start ``N_CLIENTS`` threads looping suggest -> observe until the study completes or
    ``stop`` is set. Worker ``i`` in ``drop_once``, once ``crashed`` is set, drops the next trial
    it gets without observing it (its process "died with the server") and goes on. The other
    workers ask for no new trial after the crash until those have dropped theirs (what they
    had in flight at the crash still completes): else they could spend the budget while a
    dropping worker waits out a retry, and it would never get a trial to drop."""
    droppers = set(drop_once or ())
    all_dropped = threading.Event()
    if not droppers:
        all_dropped.set()

    def worker(i: int) -> None:
        dropping = {i} & droppers
        with Client(url, retries=retries) as client:
            study = client.get_study(name)
            client_id = f"worker-{i}-{uuid.uuid4().hex[:8]}"
            while not stop.is_set():
                if crashed is not None and crashed.is_set() and not dropping:
                    while not all_dropped.wait(0.1) and not stop.is_set():
                        pass
                try:
                    trials = study.suggest(client_id=client_id)
                except StudyNotActiveError:
                    return  # the budget is spent and the study completed
                if not trials:
                    # Budget taken while trials still run (some of them the dropped ones, until
                    # their heartbeat expires and they are requeued): ask again shortly.
                    stop.wait(0.1)
                    continue
                [t] = trials
                with traffic.cond:
                    prev = traffic.holder.setdefault(t.number, i)
                    if prev != i:
                        traffic.duplicates.append((t.number, prev, i))
                if crashed is not None and crashed.is_set() and dropping:
                    dropping.clear()
                    with traffic.cond:
                        traffic.dropped[t.number] = dict(t.params)
                        if len(traffic.dropped) == len(droppers):
                            all_dropped.set()
                    client_id = f"worker-{i}-{uuid.uuid4().hex[:8]}"  # a new process
                    continue
                value = _objective(t.params)
                try:
                    study.observe(t, {"loss": value})
                except TrialFinishedError:
                    # Only allowed for a trial abandoned while its result was in flight whose
                    # configuration was handed out again; checked at the end.
                    with traffic.cond:
                        traffic.refused_late.append(t.number)
                    continue
                with traffic.cond:
                    traffic.acked[t.number] = value
                    traffic.cond.notify_all()

    def guarded(i: int) -> None:
        try:
            worker(i)
        except BaseException as e:  # reported by the test, not lost in the thread
            with traffic.cond:
                traffic.errors.append(e)
                traffic.cond.notify_all()

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "client threads did not finish"


def _db_url(db: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if db == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    return request.getfixturevalue("postgres_databases").create()


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_under_eight_clients_loses_no_acknowledged_observe(
    db: str,
    request: pytest.FixtureRequest,
    start_server: Callable[..., Any],
    unique_name: str,
    tmp_path: Any,
) -> None:
    db_url = _db_url(db, request, tmp_path)
    server = start_server(db_url)
    with Client(server.url) as c:
        c.create_study(
            unique_name, {"x": autotune.Float(0, 1), "y": autotune.Int(0, 100)},
            {"loss": "minimize"}, max_trials=MAX_TRIALS, algorithm="random", seed=3,
            heartbeat_grace_s=HEARTBEAT_GRACE_S,
        )  # fmt: skip

    traffic = Traffic()
    stop = threading.Event()
    crashed = threading.Event()
    threads = _run_workers(
        server.url,
        unique_name,
        traffic,
        retries=CLIENT_RETRIES,
        stop=stop,
        drop_once={0, 1},
        crashed=crashed,
    )
    try:
        traffic.wait_for(lambda: len(traffic.acked) >= KILL_AFTER_ACKS, "traffic before the kill")
        server.kill()  # requests are in flight: suggests, observes, commits
        crashed.set()
        with traffic.cond:
            acked_before = len(traffic.acked)
        server.start()
        traffic.wait_for(lambda: len(traffic.acked) > acked_before, "an observe after restart")
        _join(threads)
    finally:
        stop.set()
    assert not traffic.errors, traffic.errors[:3]
    assert not traffic.duplicates, f"trial numbers handed to two workers: {traffic.duplicates}"
    assert len(traffic.dropped) == 2

    with Client(db=db_url) as c:
        study = c.get_study(unique_name)
        stored = {t.number: t for t in study.trials()}
        state = study.info.state
    # Every acknowledged observe is stored, with its value.
    for number, value in traffic.acked.items():
        assert stored[number].state == TrialState.COMPLETED, stored[number]
        assert stored[number].values == {"loss": value}
    # Numbers are unique and dense; nothing is left running; the budget is exactly spent.
    assert sorted(stored) == list(range(len(stored)))
    states = [t.state for t in stored.values()]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETED) == MAX_TRIALS
    assert state == StudyState.COMPLETED
    # The dead workers' trials were abandoned by the heartbeat rule and their configurations
    # handed out again as newer trials, which completed.
    for number, params in traffic.dropped.items():
        assert stored[number].state == TrialState.ABANDONED, stored[number]
        again = [t for t in stored.values() if t.number > number and t.params == params]
        assert TrialState.COMPLETED in [t.state for t in again], (number, again)
    # A late result refused (abandoned, configuration handed out again) left its trial abandoned.
    for number in traffic.refused_late:
        assert stored[number].state == TrialState.ABANDONED
    # Every completed trial was acknowledged to a worker, except ones whose observe was in flight
    # at the kill and was applied before the answer was lost, which the client then read back.
    assert {n for n, t in stored.items() if t.state == TrialState.COMPLETED} == set(traffic.acked)


@pytest.mark.postgres
def test_dropped_database_connections_are_retried_not_reported(
    postgres_databases: Any, start_server: Callable[..., Any], unique_name: str
) -> None:
    db_url = postgres_databases.create()
    dbname = db_url.rsplit("/", 1)[1]
    server = start_server(db_url)
    with Client(server.url) as c:
        c.create_study(
            unique_name, {"x": autotune.Float(0, 1), "y": autotune.Int(0, 100)},
            {"loss": "minimize"}, algorithm="random", seed=4,
        )  # fmt: skip

    traffic = Traffic()
    stop = threading.Event()
    # retries=0: a 503 (or any error) from the server reaches the test as an error.
    threads = _run_workers(server.url, unique_name, traffic, retries=0, stop=stop)
    terminated = 0
    try:
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}", autocommit=True) as a:
            for round_ in range(DROP_ROUNDS):
                traffic.wait_for(
                    lambda r=round_: len(traffic.acked) >= ACKS_PER_ROUND * (r + 1),
                    f"traffic before drop {round_}",
                )
                killed = a.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchone()
                assert killed is not None
                terminated += killed[0]
            traffic.wait_for(
                lambda: len(traffic.acked) >= ACKS_PER_ROUND * (DROP_ROUNDS + 1),
                "traffic after the last drop",
            )
    finally:
        stop.set()
        _join(threads)
    assert terminated >= DROP_ROUNDS, "no server connection was terminated"
    assert not traffic.errors, traffic.errors[:3]
    assert not traffic.duplicates
    with Client(db=db_url) as c:
        stored = {t.number: t for t in c.get_study(unique_name).trials()}
    for number, value in traffic.acked.items():
        assert stored[number].values == {"loss": value}
    assert sorted(stored) == list(range(len(stored)))


# -- the storage layer alone ----------------------------------------------------------------


@pytest.fixture
def probe_db(postgres_databases: Any) -> Iterator[tuple[Database, str]]:
    """A database with a ``probe`` table; a ``Database`` whose pool has one connection."""
    url = postgres_databases.create()
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}", autocommit=True) as a:
        a.execute("CREATE TABLE probe (tag integer)")
    db = Database(url + "?sslmode=disable", pool_size=1, max_overflow=0)
    try:
        yield db, dbname
    finally:
        db.dispose()


def _terminate(dbname: str, pid: int) -> None:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}", autocommit=True) as a:
        a.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _tags(db: Database) -> list[int]:
    return db.run(
        lambda s, _: list(s.execute(text("SELECT tag FROM probe")).scalars()), write=False
    )


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["statement", "commit"])
def test_connection_lost_before_commit_is_retried(
    probe_db: tuple[Database, str], where: str
) -> None:
    db, dbname = probe_db
    calls: list[int] = []

    def fn(s: Any, attempt: int) -> str:
        calls.append(attempt)
        s.execute(text("INSERT INTO probe VALUES (:t)"), {"t": attempt})
        if attempt == 0:
            _terminate(dbname, s.execute(text("SELECT pg_backend_pid()")).scalar())
            if where == "statement":
                s.execute(text("SELECT 1"))  # fails: the connection is gone
        return "done"

    assert db.run(fn, write=True) == "done"
    assert calls == [0, 1]
    assert _tags(db) == [1]  # the first try rolled back, the second committed once


@contextmanager
def _proxy_that_loses_commit_answers(target_port: int) -> Iterator[tuple[int, list[int]]]:
    """A TCP proxy to PostgreSQL that forwards the first simple-query ``COMMIT`` and hangs up
    on the client: the COMMIT is applied and its answer lost.
    Yields the proxy's port and a list that counts the COMMITs it swallowed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    swallowed: list[int] = []
    armed = [True]  # only the first COMMIT is swallowed
    closing = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, cut: threading.Event, watch: bool) -> None:
        try:
            while data := src.recv(65536):
                if cut.is_set():
                    break  # the server's answer to the COMMIT: lost
                if watch and armed[0] and b"Q\x00\x00\x00\x0bCOMMIT\x00" in data:
                    armed[0] = False
                    swallowed.append(1)
                    cut.set()
                    dst.sendall(data)
                    # Hang up on the client at once; the server's side is closed when its
                    # answer (so the commit) has come, by the other direction's pump.
                    _close(src)
                    return
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)

    def accept() -> None:
        while not closing.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", target_port))
            cut = threading.Event()
            threading.Thread(target=pump, args=(client, server, cut, True), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, cut, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], swallowed
    finally:
        closing.set()
        listener.close()


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.mark.postgres
def test_commit_applied_but_answer_lost_is_not_applied_twice(
    probe_db: tuple[Database, str],
) -> None:
    _, dbname = probe_db
    with _proxy_that_loses_commit_answers(5432) as (port, swallowed):
        url = f"postgresql://postgres@127.0.0.1:{port}/{dbname}?sslmode=disable"
        db = Database(url, pool_size=1, max_overflow=0)
        calls: list[int] = []

        def fn(s: Any, attempt: int) -> str:
            calls.append(attempt)
            s.execute(text("INSERT INTO probe VALUES (:t)"), {"t": attempt})
            return f"stored by try {attempt}"

        try:
            assert db.run(fn, write=True) == "stored by try 0"
            assert swallowed == [1], "the proxy did not drop a COMMIT's answer"
            assert calls == [0]
            assert _tags(db) == [0]
        finally:
            db.dispose()
