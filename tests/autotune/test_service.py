"""StudyService over SQLite and PostgreSQL: studies, suggest/observe, errors and concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from autotune.designers import Designer, Problem, register_designer
from autotune.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    StudyNotActiveError,
    TrialFinishedError,
    ValidationError,
)
from autotune.models import StudyState, Trial, TrialState
from autotune.service import StudyService
from autotune.space import Params
from autotune.storage.schema import QueueRow, TrialRow

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "n": {"type": "int", "low": 1, "high": 8},
    "kind": {"type": "categorical", "choices": ["a", "b"]},
}


@pytest.fixture
def service(db_url: str, clock: Any) -> Iterator[StudyService]:
    svc = StudyService(db_url, clock=clock)
    yield svc
    svc.close()


def make(svc: StudyService, name: str, **kw: Any) -> Any:
    spec: dict[str, Any] = {"name": name, "space": SPACE, "algorithm": "random", **kw}
    spec.setdefault("objectives", {"loss": "minimize"})
    return svc.create_study(spec)


def queue_len(svc: StudyService, study_id: int) -> int:
    with svc.db.transaction(write=False) as s:
        return s.scalar(select(func.count()).where(QueueRow.study_id == study_id)) or 0


# -- studies ---------------------------------------------------------------------------------
def test_create_get_list_paginate(service: StudyService, unique_name: str) -> None:
    names = [f"{unique_name}_{i}" for i in range(5)]
    created = [make(service, n, seed=i) for i, n in enumerate(names)]
    assert created[0].state == StudyState.ACTIVE and created[0].n_trials == 0
    assert created[2].seed == 2 and created[0].created_at.tzinfo is not None
    got = service.get_study(names[1])
    assert got == created[1]

    page = service.list_studies(offset=0, limit=1000)
    ours = [s for s in page.items if s.name in names]
    assert [s.name for s in ours] == names  # ordered by id
    total = page.total
    p1 = service.list_studies(offset=0, limit=2)
    p2 = service.list_studies(offset=2, limit=2)
    assert len(p1.items) == 2 and p1.total == total and p1.limit == 2
    assert p1.items[-1].id < p2.items[0].id

    service.set_study_state(names[3], StudyState.PAUSED)
    paused = service.list_studies(state=StudyState.PAUSED, limit=1000).items
    assert names[3] in [s.name for s in paused]
    assert all(s.state == StudyState.PAUSED for s in paused)

    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 1001}):
        with pytest.raises(ValidationError) as e:
            service.list_studies(**bad)
        assert e.value.details["field"] == next(iter(bad))


def test_create_errors(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    with pytest.raises(AlreadyExistsError) as e:
        make(service, unique_name)
    assert e.value.details["field"] == "name"
    with pytest.raises(ValidationError) as e:
        make(service, unique_name + "x", algorithm="no-such-thing")
    assert e.value.details["field"] == "algorithm" and "random" in e.value.message
    with pytest.raises(ValidationError) as e:
        service.create_study(
            {"name": unique_name + "y", "space": {"x": {"type": "float", "low": 1, "high": 0}}}
        )
    assert e.value.details["field"] == "space.x"
    with pytest.raises(ValidationError):
        service.create_study({"name": "bad name!", "space": SPACE})
    with pytest.raises(NotFoundError):
        service.get_study(unique_name + "-missing")


def test_seed_is_drawn_and_stored(service: StudyService, unique_name: str) -> None:
    a = make(service, unique_name + "a")
    b = make(service, unique_name + "b")
    assert 0 <= a.seed < 2**63 and a.seed != b.seed
    assert service.get_study(a.name).seed == a.seed


def test_pause_resume_complete_delete(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    service.suggest(unique_name)
    assert service.set_study_state(unique_name, StudyState.PAUSED).state == StudyState.PAUSED
    with pytest.raises(StudyNotActiveError):
        service.suggest(unique_name)
    assert service.set_study_state(unique_name, "active").state == StudyState.ACTIVE
    assert len(service.suggest(unique_name).trials) == 1
    service.set_study_state(unique_name, StudyState.COMPLETED)
    with pytest.raises(StudyNotActiveError):
        service.suggest(unique_name)
    with pytest.raises(ConflictError):
        service.set_study_state(unique_name, StudyState.ACTIVE)
    with pytest.raises(ValidationError) as e:
        service.set_study_state(unique_name, "sleeping")  # type: ignore[arg-type]
    assert e.value.details["field"] == "state"

    study_id = service.get_study(unique_name).id
    service.report(unique_name, 0, step=1, value=1.0)
    service.delete_study(unique_name)
    with pytest.raises(NotFoundError):
        service.get_study(unique_name)
    with pytest.raises(NotFoundError):
        service.delete_study(unique_name)
    with service.db.transaction(write=False) as s:
        assert s.scalar(select(func.count()).where(TrialRow.study_id == study_id)) == 0
    # The name is free again, with a fresh numbering.
    make(service, unique_name)
    assert service.suggest(unique_name).trials[0].number == 0


# -- suggest ---------------------------------------------------------------------------------
def test_suggest_numbering_and_count(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    r = service.suggest(unique_name, count=3)
    assert [t.number for t in r.trials] == [0, 1, 2]
    assert all(t.state == TrialState.RUNNING for t in r.trials)
    assert r.designer == "random" and r.study_state == StudyState.ACTIVE
    assert [t.number for t in service.suggest(unique_name, count=2).trials] == [3, 4]
    assert service.get_study(unique_name).n_trials == 5
    assert service.get_study(unique_name).designer_info == {"designer": "random"}
    for bad in (0, 1001, -1, "2", 1.5, True):
        with pytest.raises(ValidationError) as e:
            service.suggest(unique_name, count=bad)  # type: ignore[arg-type]
        assert e.value.details["field"] == "count"
    with pytest.raises(NotFoundError):
        service.suggest(unique_name + "-missing")


def test_client_id_is_idempotent(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    first = service.suggest(unique_name, count=2, client_id="w1")
    service.report(unique_name, 1, step=3, value=0.5)
    again = service.suggest(unique_name, count=2, client_id="w1")
    assert [t.number for t in again.trials] == [t.number for t in first.trials] == [0, 1]
    assert [t.params for t in again.trials] == [t.params for t in first.trials]
    assert [m.value for m in again.trials[1].intermediate] == [0.5]
    other = service.suggest(unique_name, client_id="w2")
    assert [t.number for t in other.trials] == [2]
    service.observe(unique_name, 0, {"loss": 1.0})
    assert [t.number for t in service.suggest(unique_name, client_id="w1").trials] == [1]
    service.observe(unique_name, 1, {"loss": 1.0})
    assert [t.number for t in service.suggest(unique_name, client_id="w1").trials] == [3]
    assert service.get_study(unique_name).n_trials == 4


def test_max_trials_held_then_completed(service: StudyService, unique_name: str) -> None:
    make(service, unique_name, max_trials=3)
    r = service.suggest(unique_name, count=5)
    assert [t.number for t in r.trials] == [0, 1, 2]
    r = service.suggest(unique_name)
    assert r.trials == [] and r.study_state == StudyState.ACTIVE  # two still running
    service.observe(unique_name, 0, {"loss": 1.0})
    service.fail(unique_name, 1, reason="boom")
    assert service.get_study(unique_name).state == StudyState.ACTIVE
    service.observe(unique_name, 2, {"loss": 2.0})
    assert service.get_study(unique_name).state == StudyState.COMPLETED
    with pytest.raises(StudyNotActiveError):
        service.suggest(unique_name)


def test_enqueue_comes_first(service: StudyService, unique_name: str) -> None:
    study = make(service, unique_name)
    q1 = service.enqueue(unique_name, {"x": 0.25, "n": 3, "kind": "b"})
    q2 = service.enqueue(unique_name, {"x": 0.5, "n": 4, "kind": "a"})
    assert q1.params == {"x": 0.25, "n": 3, "kind": "b"} and q2.id > q1.id
    r = service.suggest(unique_name, count=3)
    assert [t.params for t in r.trials[:2]] == [q1.params, q2.params]
    assert queue_len(service, study.id) == 0
    for params, field in (
        ({"x": 2.0, "n": 3, "kind": "a"}, "params.x"),
        ({"x": 0.1, "n": 3, "kind": "c"}, "params.kind"),
        ({"x": 0.1, "n": 3}, "params.kind"),
        ({"x": 0.1, "n": 3, "kind": "a", "zz": 1}, "params.zz"),
    ):
        with pytest.raises(ValidationError) as e:
            service.enqueue(unique_name, params)
        assert e.value.details["field"] == field
    assert queue_len(service, study.id) == 0


def test_abandoned_trials_are_requeued(service: StudyService, unique_name: str, clock: Any) -> None:
    make(service, unique_name, heartbeat_grace_s=60)
    t0, t1 = service.suggest(unique_name, count=2).trials
    clock.advance(30)
    service.heartbeat(unique_name, t1.number)
    clock.advance(40)  # t0 silent for 70 s, t1 for 40 s
    (t2,) = service.suggest(unique_name).trials
    assert t2.number == 2 and t2.params == t0.params
    assert service.get_trial(unique_name, 0).state == TrialState.ABANDONED
    assert service.get_trial(unique_name, 1).state == TrialState.RUNNING
    # A late result is still a result.
    late = service.observe(unique_name, 0, {"loss": 0.5})
    assert late.state == TrialState.COMPLETED and late.values == {"loss": 0.5}


def test_late_result_withdraws_requeued_config(
    service: StudyService, unique_name: str, clock: Any
) -> None:
    study = make(service, unique_name, heartbeat_grace_s=60)
    (t0,) = service.suggest(unique_name, client_id="slow").trials
    (t1,) = service.suggest(unique_name, client_id="w").trials
    clock.advance(50)
    service.heartbeat(unique_name, t1.number)
    clock.advance(20)
    # Client "w" gets its running trial back; t0 expires and its config waits in the queue.
    assert [t.number for t in service.suggest(unique_name, client_id="w").trials] == [1]
    assert service.get_trial(unique_name, 0).state == TrialState.ABANDONED
    assert queue_len(service, study.id) == 1
    service.observe(unique_name, 0, {"loss": 1.0})
    assert queue_len(service, study.id) == 0
    (t2,) = service.suggest(unique_name).trials
    assert t2.params != t0.params


def test_abandoned_trials_free_the_budget(
    service: StudyService, unique_name: str, clock: Any
) -> None:
    make(service, unique_name, heartbeat_grace_s=10, max_trials=2)
    service.suggest(unique_name, count=2)
    assert service.suggest(unique_name).trials == []
    clock.advance(11)
    r = service.suggest(unique_name, count=5)
    assert [t.number for t in r.trials] == [2, 3]


# -- observe / report / fail / heartbeat ---------------------------------------------------------
def test_observe_validation_stores_nothing(service: StudyService, unique_name: str) -> None:
    make(
        service,
        unique_name,
        objectives={"loss": "minimize", "acc": "maximize"},
        constraints={"latency": ["<=", 20]},
    )
    make(service, unique_name + "_other")
    service.suggest(unique_name, count=2)
    service.suggest(unique_name + "_other")
    service.observe(unique_name, 1, {"loss": 1.0, "acc": 0.5})
    before = service.get_trial(unique_name, 0)

    cases: list[tuple[str, int, Any, type[Exception], str]] = [
        (unique_name, 0, {"loss": 1.0}, ValidationError, "values.acc"),
        (unique_name, 0, {"loss": 1.0, "acc": 0.1, "f1": 3.0}, ValidationError, "values.f1"),
        (unique_name, 0, {"loss": float("nan"), "acc": 0.1}, ValidationError, "values.loss"),
        (unique_name, 0, {"loss": 1.0, "acc": float("inf")}, ValidationError, "values.acc"),
        (
            unique_name,
            0,
            {"loss": 1.0, "acc": 1, "latency": -float("inf")},
            ValidationError,
            "values.latency",
        ),
        (unique_name, 0, {"loss": "1", "acc": 0.1}, ValidationError, "values.loss"),
        (unique_name, 0, [1.0], ValidationError, "values"),
        (unique_name, 1, {"loss": 1.0, "acc": 0.5}, TrialFinishedError, "number"),
        (unique_name, 7, {"loss": 1.0, "acc": 0.5}, NotFoundError, "number"),
        (unique_name + "_missing", 0, {"loss": 1.0, "acc": 0.5}, NotFoundError, "name"),
        (unique_name, -1, {"loss": 1.0, "acc": 0.5}, ValidationError, "number"),
    ]
    for name, number, values, err, field in cases:
        with pytest.raises(err) as e:
            service.observe(name, number, values)
        assert e.value.details["field"] == field, (values, e.value)
        assert e.value.message
    # The other study's trial 0 is not this study's trial 1.
    with pytest.raises(NotFoundError):
        service.observe(unique_name + "_other", 1, {"value": 1.0})
    with pytest.raises(ValidationError) as e:
        service.observe(unique_name, 0, {"loss": 1.0, "acc": 0.1}, metadata={"x": object()})
    assert e.value.details["field"] == "metadata"

    assert service.get_trial(unique_name, 0) == before
    assert service.get_trial(unique_name, 1).values == {"loss": 1.0, "acc": 0.5}
    assert service.get_trial(unique_name + "_other", 0).state == TrialState.RUNNING

    done = service.observe(
        unique_name, 0, {"loss": 2, "acc": 0.25, "latency": 3}, metadata={"host": "h1"}
    )
    assert done.state == TrialState.COMPLETED and done.values == {
        "loss": 2.0,
        "acc": 0.25,
        "latency": 3.0,
    }
    assert done.metadata == {"host": "h1"} and done.completed_at is not None
    assert service.get_trial(unique_name, 0) == done


def test_report_fail_heartbeat(service: StudyService, unique_name: str, clock: Any) -> None:
    make(service, unique_name)
    service.suggest(unique_name, count=3)
    assert service.report(unique_name, 0, step=0, value=0.9).should_stop is False
    service.report(unique_name, 0, step=5, value=0.5)
    clock.advance(3)
    service.report(unique_name, 0, step=5, value=0.4)  # overwrites step 5
    t = service.get_trial(unique_name, 0)
    assert [(m.step, m.value) for m in t.intermediate] == [(0, 0.9), (5, 0.4)]
    assert t.heartbeat_at == clock.now
    for kw, field in (
        ({"step": -1, "value": 1.0}, "step"),
        ({"step": 1.5, "value": 1.0}, "step"),
        ({"step": 1, "value": float("nan")}, "value"),
    ):
        with pytest.raises(ValidationError) as e:
            service.report(unique_name, 0, **kw)
        assert e.value.details["field"] == field

    clock.advance(5)
    hb = service.heartbeat(unique_name, 1)
    assert hb.heartbeat_at == clock.now and hb.state == TrialState.RUNNING

    failed = service.fail(unique_name, 1, reason="x" * 20_000)
    assert failed.state == TrialState.FAILED and len(failed.error or "") == 10_000
    for call in (
        lambda: service.fail(unique_name, 1, reason="again"),
        lambda: service.heartbeat(unique_name, 1),
        lambda: service.report(unique_name, 1, step=1, value=1.0),
        lambda: service.observe(unique_name, 1, {"loss": 1.0}),
    ):
        with pytest.raises(TrialFinishedError):
            call()
    done = service.observe(unique_name, 0, {"loss": 0.4})
    assert [m.step for m in done.intermediate] == [0, 5]
    with pytest.raises(NotFoundError):
        service.heartbeat(unique_name, 99)


def test_list_and_get_trials(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    service.suggest(unique_name, count=5)
    service.observe(unique_name, 1, {"loss": 1.0})
    service.observe(unique_name, 3, {"loss": 2.0})
    page = service.list_trials(unique_name, offset=1, limit=2)
    assert [t.number for t in page.items] == [1, 2] and page.total == 5
    done = service.list_trials(unique_name, state=TrialState.COMPLETED)
    assert [t.number for t in done.items] == [1, 3] and done.total == 2
    assert service.get_trial(unique_name, 3).values == {"loss": 2.0}
    with pytest.raises(ValidationError):
        service.list_trials(unique_name, limit=1001)
    with pytest.raises(ValidationError):
        service.list_trials(unique_name, state="sleeping")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        service.list_trials(unique_name + "-missing")
    with pytest.raises(NotFoundError):
        service.get_trial(unique_name, 5)


# -- best trials -----------------------------------------------------------------------------
def _run(service: StudyService, name: str, results: list[dict[str, float] | None]) -> None:
    trials = service.suggest(name, count=len(results)).trials
    for t, values in zip(trials, results, strict=True):
        if values is None:
            service.fail(name, t.number, reason="failed")
        else:
            service.observe(name, t.number, values)


def test_best_single_objective_with_constraints(service: StudyService, unique_name: str) -> None:
    make(service, unique_name, objectives={"acc": "maximize"}, constraints={"lat": ["<=", 20]})
    assert service.best_trials(unique_name) == []
    _run(
        service,
        unique_name,
        [
            {"acc": 0.9, "lat": 30},  # best accuracy, infeasible
            {"acc": 0.7, "lat": 10},
            {"acc": 0.8},  # constraint metric missing: infeasible
            None,
            {"acc": 0.75, "lat": 20},  # best feasible
        ],
    )
    best = service.best_trials(unique_name)
    assert [t.number for t in best] == [4]
    service.suggest(unique_name)  # running trials never count
    assert [t.number for t in service.best_trials(unique_name)] == [4]


def test_pareto_front(service: StudyService, unique_name: str) -> None:
    make(
        service,
        unique_name,
        objectives={"loss": "minimize", "acc": "maximize"},
        constraints={"mem": [">=", 1]},
    )
    _run(
        service,
        unique_name,
        [
            {"loss": 1.0, "acc": 0.5, "mem": 2},  # 0: front
            {"loss": 2.0, "acc": 0.9, "mem": 2},  # 1: front
            {"loss": 2.0, "acc": 0.4, "mem": 2},  # 2: dominated by 0
            {"loss": 0.5, "acc": 0.95, "mem": 0},  # 3: would dominate all, infeasible
            {"loss": 1.0, "acc": 0.5, "mem": 5},  # 4: equal to 0: both on the front
            {"loss": 3.0, "acc": 0.9, "mem": 2},  # 5: dominated by 1
            {"loss": 1.5, "acc": 0.7, "mem": 2},  # 6: front
        ],
    )
    assert [t.number for t in service.best_trials(unique_name)] == [0, 1, 4, 6]


# -- determinism -----------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["random", "sobol"])
def test_seeded_study_is_reproducible(tmp_path: Any, algorithm: str) -> None:
    runs = []
    for i in range(2):
        svc = StudyService(f"sqlite:///{tmp_path / f'run{i}.db'}")
        try:
            make(svc, "s", algorithm=algorithm, seed=1234)
            got = []
            for _ in range(4):
                trials = svc.suggest("s", count=2).trials
                got += [t.params for t in trials]
                for t in trials:
                    svc.observe("s", t.number, {"loss": 1.0})
            runs.append(got)
        finally:
            svc.close()
    assert runs[0] == runs[1]
    assert len({str(p) for p in runs[0]}) == len(runs[0])


# -- concurrency -----------------------------------------------------------------------------
@pytest.mark.slow
def test_sixteen_threads_one_study(service: StudyService, unique_name: str) -> None:
    n_threads, n_iter, max_trials = 16, 20, 300  # 320 attempts, 300 allowed
    make(service, unique_name, max_trials=max_trials)
    observed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        try:
            start.wait()
            for _ in range(n_iter):
                try:
                    r = service.suggest(unique_name, client_id=f"w{i}")
                except StudyNotActiveError:
                    return
                if not r.trials:
                    return
                (t,) = r.trials
                service.observe(unique_name, t.number, {"loss": float(t.number)})
                with lock:
                    observed.append(t.number)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(observed) == len(set(observed)) == max_trials
    trials = service.list_trials(unique_name, limit=1000).items
    assert [t.number for t in trials] == list(range(max_trials))
    assert all(t.state == TrialState.COMPLETED for t in trials)
    assert all(t.values == {"loss": float(t.number)} for t in trials)
    study = service.get_study(unique_name)
    assert study.n_trials == max_trials and study.state == StudyState.COMPLETED


def test_errors_survive_the_http_payload(service: StudyService, unique_name: str) -> None:
    from autotune.errors import error_from_payload

    make(service, unique_name)
    service.suggest(unique_name)
    with pytest.raises(ValidationError) as e:
        service.observe(unique_name, 0, {"loss": float("inf")})
    back = error_from_payload(e.value.status, e.value.to_payload())
    assert type(back) is ValidationError and back.field == "values.loss"
    assert back.details == e.value.details


def test_odd_input_never_reaches_the_database_raw(service: StudyService, unique_name: str) -> None:
    make(service, unique_name)
    for bad in ("x\x00y", "", "é" * 3, "a" * 500, 7):
        with pytest.raises(NotFoundError):
            service.get_study(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as e:
        service.suggest(unique_name, client_id="w\x00")
    assert e.value.details["field"] == "client_id"
    service.suggest(unique_name)
    assert service.fail(unique_name, 0, reason="bad\x00byte").error == "bad\ufffdbyte"
    with pytest.raises(NotFoundError):
        service.get_trial(unique_name, 2**70)


_WORKER_SCRIPT = """
import os, pathlib, sys, threading, time
from autotune.errors import StudyNotActiveError
from autotune.service import StudyService
url, name, barrier, n_threads = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
svc = StudyService(url)
(barrier / str(os.getpid())).touch()  # start together: wait for the other process
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.005)
done, errors = [], []
def work():
    try:
        while True:
            try:
                r = svc.suggest(name, count=2)
            except StudyNotActiveError:
                return
            if not r.trials:
                return
            for t in r.trials:
                svc.observe(name, t.number, {"value": float(t.number)})
                done.append(t.number)
    except BaseException as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work) for _ in range(n_threads)]
[t.start() for t in threads]
[t.join() for t in threads]
svc.close()
print(" ".join(map(str, done)))
print("ERRORS", errors, file=sys.stderr)
sys.exit(1 if errors else 0)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_processes_share_one_study(backend: str, tmp_path: Any, request: Any) -> None:
    """Two processes (4 threads each) suggest and observe on one study at once: numbers never
    collide, every observe is stored and max_trials holds (migrations race in test_storage)."""
    import subprocess
    import sys
    from pathlib import Path

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create("autotune_procs")
    max_trials = 60
    svc = StudyService(url)
    make(svc, "shared", max_trials=max_trials, objectives={"value": "minimize"})
    svc.close()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER_SCRIPT, url, "shared", str(barrier), "4"],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    numbers: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        numbers += [int(n) for n in out.split()]
    assert sorted(numbers) == list(range(max_trials))
    svc = StudyService(url)
    try:
        trials = svc.list_trials("shared", limit=1000).items
        assert [t.number for t in trials] == list(range(max_trials))
        assert all(t.values == {"value": float(t.number)} for t in trials)
        assert svc.get_study("shared").state == StudyState.COMPLETED
    finally:
        svc.close()


def test_suggest_and_observe_are_a_few_statements(service: StudyService, unique_name: str) -> None:
    """One short transaction each: the hot path must not grow queries (or load the history for a
    designer that only needs its size)."""
    from sqlalchemy import event

    make(service, unique_name, max_trials=1000)
    for _ in range(5):  # some history, so loading it would show
        (t,) = service.suggest(unique_name).trials
        service.observe(unique_name, t.number, {"loss": 1.0})
    statements: list[str] = []

    # Not counted: the storage layer's own per-transaction statements (on PostgreSQL, the
    # transaction id read before COMMIT, to settle a COMMIT whose connection is lost).
    own = ("BEGIN", "SELECT 1", "PRAGMA", "SELECT TXID_CURRENT_IF_ASSIGNED()")

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(own):
            statements.append(statement)

    engine = service.db.write_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        (t,) = service.suggest(unique_name).trials
        n_suggest = len(statements)
        service.observe(unique_name, t.number, {"loss": 1.0})
        n_observe = len(statements) - n_suggest
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # study (locked), abandon silent trials, counts, pop queue, insert trials, update study
    assert n_suggest <= 6, statements
    # trial with its study, guarded update
    assert n_observe <= 2, statements[n_suggest:]


# -- optimistic suggest ---------------------------------------------------------------------------
@register_designer("test-lowest-unused")
class LowestUnused(Designer):
    """An expensive designer that proposes the lowest ``n`` no finished or running trial has:
    any proposal computed from a stale history would repeat a running trial's ``n``."""

    name = "test-lowest-unused"
    expensive = True
    delay_s = 0.002

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        time.sleep(self.delay_s)
        used = {t.params["n"] for t in completed} | {p["n"] for p in pending}
        out: list[Params] = []
        n = 0
        while len(out) < count:
            if n not in used:
                out.append({"n": n})
                used.add(n)
            n += 1
        return out


INT_SPACE = {"n": {"type": "int", "low": 0, "high": 1_000_000}}


@pytest.mark.slow
def test_sixteen_threads_optimistic_designer(service: StudyService, unique_name: str) -> None:
    """The designer runs outside the write transaction: under 16 racing threads a proposal is
    handed out only for the history it was computed from (never a stale one)."""
    n_threads, n_iter, max_trials = 16, 20, 300
    service.create_study(
        {
            "name": unique_name,
            "space": INT_SPACE,
            "algorithm": "test-lowest-unused",
            "objectives": {"loss": "minimize"},
            "max_trials": max_trials,
        }
    )
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(n_iter):
                try:
                    r = service.suggest(unique_name, client_id=f"w{i}")
                except StudyNotActiveError:
                    return
                if not r.trials:
                    return
                (t,) = r.trials
                if j % 2:  # half the trials stay running a while (pending for the others)
                    time.sleep(0.001)
                service.observe(unique_name, t.number, {"loss": float(t.number)})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    trials = service.list_trials(unique_name, limit=1000).items
    assert [t.number for t in trials] == list(range(max_trials))
    assert sorted(t.params["n"] for t in trials) == list(range(max_trials))  # no duplicate
    assert all(t.state == TrialState.COMPLETED for t in trials)
    study = service.get_study(unique_name)
    assert study.state == StudyState.COMPLETED
    assert study.designer_info == {"designer": "test-lowest-unused"}


def test_slow_designer_holds_no_write_lock(
    service: StudyService, unique_name: str, monkeypatch: Any
) -> None:
    """While a slow designer computes for one study, another study's suggest and this study's
    observe go through at once (on SQLite they used to wait for the whole designer call)."""
    monkeypatch.setattr(LowestUnused, "delay_s", 0.6)
    slow = unique_name + "_slow"
    service.create_study(
        {"name": slow, "space": INT_SPACE, "algorithm": "test-lowest-unused", "seed": 1}
    )
    make(service, unique_name)
    (t0,) = service.suggest(slow).trials  # 0.6 s
    got: list[Any] = []
    th = threading.Thread(target=lambda: got.append(service.suggest(slow)))
    th.start()
    time.sleep(0.2)  # the designer is running now
    t = time.perf_counter()
    service.suggest(unique_name)
    service.observe(slow, t0.number, {"value": 1.0})
    elapsed = time.perf_counter() - t
    th.join()
    assert elapsed < 0.3, elapsed
    # The observe changed the history under the running designer: its proposal was computed
    # again from the new one (n=0 is finished, so n=1 either way; trial 1 is the next number).
    (t1,) = got[0].trials
    assert t1.number == 1 and t1.params == {"n": 1}


# -- late results of abandoned trials --------------------------------------------------------------
def test_late_result_refused_when_its_place_was_taken(
    service: StudyService, unique_name: str, clock: Any
) -> None:
    """An abandoned trial's configuration went to a newer trial, which took its place in the
    budget: its late result (observe, fail or a pruning report) would make max_trials + 1."""
    make(
        service,
        unique_name,
        heartbeat_grace_s=10,
        max_trials=2,
        stopper={"type": "patience", "upper": 5.0},
    )
    t0, t1 = service.suggest(unique_name, count=2).trials
    clock.advance(11)
    service.heartbeat(unique_name, t1.number)
    (t2,) = service.suggest(unique_name).trials  # abandons t0, hands its config out again
    assert t2.number == 2 and t2.params == t0.params
    for late in (
        lambda: service.observe(unique_name, 0, {"loss": 0.5}),
        lambda: service.fail(unique_name, 0, reason="late"),
        lambda: service.report(unique_name, 0, step=1, value=9.0),  # the stopper would prune
    ):
        with pytest.raises(TrialFinishedError) as e:
            late()
        assert "handed out again" in e.value.message and e.value.details["max_trials"] == 2
        assert service.get_trial(unique_name, 0).state == TrialState.ABANDONED
    service.observe(unique_name, 1, {"loss": 1.0})
    service.observe(unique_name, 2, {"loss": 2.0})
    study = service.get_study(unique_name)
    assert study.state == StudyState.COMPLETED
    done = service.list_trials(unique_name, state=TrialState.COMPLETED)
    assert [t.number for t in done.items] == [1, 2]


def test_late_result_accepted_when_it_fits(
    service: StudyService, unique_name: str, clock: Any
) -> None:
    study = make(service, unique_name, heartbeat_grace_s=10, max_trials=3)
    t0, t1 = service.suggest(unique_name, count=2, client_id="w").trials
    clock.advance(11)
    # Client "w" gets its trials back: they are abandoned, their configs wait in the queue.
    service.suggest(unique_name, client_id="other")  # abandons both, hands out t0's config
    assert service.get_trial(unique_name, 1).state == TrialState.ABANDONED
    assert queue_len(service, study.id) == 1
    # t1's config is still queued: its late result takes its own place back.
    assert service.observe(unique_name, 1, {"loss": 1.0}).state == TrialState.COMPLETED
    assert queue_len(service, study.id) == 0
    # t0's config was handed out again (trial 2), and one place is left: it fits too.
    assert service.observe(unique_name, 0, {"loss": 0.5}).state == TrialState.COMPLETED
    assert service.suggest(unique_name).trials == []  # 3 counted: the budget is used


@register_designer("test-broken")
class Broken(Designer):
    name = "test-broken"
    expensive = True

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        raise RuntimeError("no luck")


def test_failing_expensive_designer_reports_and_releases(
    service: StudyService, unique_name: str
) -> None:
    from autotune.errors import AutotuneError

    service.create_study({"name": unique_name, "space": INT_SPACE, "algorithm": "test-broken"})
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            service.suggest(unique_name)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    for _ in range(2):  # from another thread each time: a lock left held would hang it
        th = threading.Thread(target=ask)
        th.start()
        th.join(timeout=30)
        assert not th.is_alive()
    assert len(errors) == 2 and all(type(e) is AutotuneError for e in errors)
    assert "no luck" in errors[0].args[0]
    assert service.get_study(unique_name).n_trials == 0
