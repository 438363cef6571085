"""Many clients at once and a server crash, against real server processes.

- 16 threads x 20 suggest/observe on one study through two server processes sharing one
  PostgreSQL database: trial numbers never collide, every acknowledged observe is stored, and
  ``max_trials`` is never exceeded.
- ``serve --workers 2`` on one SQLite file: never "database is locked".

Killing the server mid-traffic and dropped database connections: ``test_crash_safety.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import autotune
from autotune import StudyNotActiveError, TrialState
from autotune.client import Client

pytestmark = pytest.mark.slow

N_THREADS = 16
N_ROUNDS = 20
MAX_TRIALS = N_THREADS * N_ROUNDS - 20  # less than the asks, so the budget must hold
JOIN_TIMEOUT_S = 240.0


def _run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "client threads did not finish"
    return errors


def _check_stored(db_url: str, name: str, acked: dict[int, float]) -> list[Any]:
    with Client(db=db_url) as c:
        trials = {t.number: t for t in c.get_study(name).trials()}
    for number, value in acked.items():
        assert trials[number].state == TrialState.COMPLETED, trials[number]
        assert trials[number].values == {"loss": value}
    return list(trials.values())


@pytest.mark.postgres
def test_two_servers_sixteen_threads(
    postgres_databases: Any, start_server: Callable[..., Any], unique_name: str
) -> None:
    db_url = postgres_databases.create()
    servers = [start_server(db_url), start_server(db_url)]
    with Client(servers[0].url) as c:
        c.create_study(
            unique_name, {"x": autotune.Float(0, 1), "y": autotune.Int(0, 100)},
            {"loss": "minimize"}, max_trials=MAX_TRIALS, algorithm="random", seed=0,
        )  # fmt: skip

    lock = threading.Lock()
    handed_out: list[int] = []
    acked: dict[int, float] = {}
    empty = [0]

    def worker(i: int) -> None:
        with Client(servers[i % 2].url) as client:
            study = client.get_study(unique_name)
            for _ in range(N_ROUNDS):
                try:
                    trials = study.suggest()
                except StudyNotActiveError:  # the budget is spent and the study completed
                    trials = []
                if not trials:
                    with lock:
                        empty[0] += 1
                    continue
                [t] = trials
                value = t.params["x"] + t.params["y"] / 100
                study.observe(t, {"loss": value})
                with lock:
                    handed_out.append(t.number)
                    acked[t.number] = value

    errors = _run_threads(N_THREADS, worker)
    assert not errors, errors[:3]
    assert len(handed_out) == len(set(handed_out)), "a trial number was handed out twice"
    assert sorted(handed_out) == list(range(MAX_TRIALS))
    assert empty[0] == N_THREADS * N_ROUNDS - MAX_TRIALS
    stored = _check_stored(db_url, unique_name, acked)
    assert len(stored) == MAX_TRIALS
    with Client(db=db_url) as c:
        assert c.get_study(unique_name).info.state == autotune.StudyState.COMPLETED


def test_two_workers_on_one_sqlite_file(
    start_server: Callable[..., Any], unique_name: str, tmp_path: Any
) -> None:
    """``serve --workers 2``: two processes write one SQLite file; never "database is locked"."""
    db_url = f"sqlite:///{tmp_path / 'workers.db'}"
    server = start_server(db_url, workers=2)
    with Client(server.url) as c:
        c.create_study(
            unique_name, {"x": autotune.Float(0, 1)}, {"loss": "minimize"}, algorithm="random"
        )
    lock = threading.Lock()
    acked: dict[int, float] = {}

    def worker(_: int) -> None:
        with Client(server.url) as client:
            study = client.get_study(unique_name)
            for _ in range(10):
                [t] = study.suggest()
                study.observe(t, {"loss": t.params["x"]})
                with lock:
                    assert t.number not in acked
                    acked[t.number] = t.params["x"]

    errors = _run_threads(8, worker)
    assert not errors, errors[:3]
    assert sorted(acked) == list(range(80))
    assert len(_check_stored(db_url, unique_name, acked)) == 80
