"""Stoppers through the StudyService on SQLite and PostgreSQL: validation at creation, each rule
on constructed reports, pruned trials (value kept, final, counted, never best) and racing reports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autotune.errors import NotFoundError, TrialFinishedError, ValidationError
from autotune.models import Direction, StudyState, TrialState
from autotune.service import StudyService
from autotune.stoppers import Curve, make_stopper

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


@pytest.fixture
def service(db_url: str, clock: Any) -> Iterator[StudyService]:
    svc = StudyService(db_url, clock=clock)
    yield svc
    svc.close()


def make(svc: StudyService, name: str, stopper: dict[str, Any] | None, **kw: Any) -> Any:
    spec: dict[str, Any] = {"name": name, "space": SPACE, "algorithm": "random", **kw}
    spec.setdefault("objectives", {"loss": "minimize"})
    return svc.create_study({**spec, "stopper": stopper})


def states(svc: StudyService, name: str) -> dict[int, TrialState]:
    return {t.number: t.state for t in svc.list_trials(name, limit=1000).items}


# -- creation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stopper", "field"),
    [
        ({"type": "asha", "reduction_factor": 1}, "stopper.reduction_factor"),
        ({"type": "median", "min_trials": 0}, "stopper.min_trials"),
        ({"type": "percentile", "percentile": 100}, "stopper.percentile"),
        ({"type": "hyperband", "max_resource": "many"}, "stopper.max_resource"),
        ({"type": "patience", "bogus": 1}, "stopper.bogus"),
        ({"type": "no-such-rule"}, "stopper.type"),
        ({"reduction_factor": 3}, "stopper"),
    ],
)
def test_bad_stopper_is_refused_and_nothing_stored(
    service: StudyService, unique_name: str, stopper: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as e:
        make(service, unique_name, stopper)
    assert e.value.details["field"] == field and e.value.message
    with pytest.raises(NotFoundError):
        service.get_study(unique_name)


def test_stopper_is_stored_normalized(service: StudyService, unique_name: str) -> None:
    study = make(service, unique_name, {"type": "asha", "reduction_factor": 2})
    expected = {
        "type": "asha",
        "min_resource": 1,
        "reduction_factor": 2,
        "min_early_stopping_rate": 0,
        "bootstrap_count": 0,
        "extrapolation": "log",
    }
    assert study.stopper == expected
    assert service.get_study(unique_name).stopper == expected
    assert make(service, unique_name + "n", None).stopper is None


# -- each rule ---------------------------------------------------------------------------------
def test_asha_prunes_the_worse_trials_and_keeps_their_last_value(
    service: StudyService, unique_name: str
) -> None:
    make(service, unique_name, {"type": "asha", "min_resource": 1, "reduction_factor": 3})
    service.suggest(unique_name, count=9)
    # Reported one after the other at the first rung (step 1), minimizing. ASHA keeps a trial
    # while its value is in the top max(n // 3, 1) of the n values at the rung so far.
    values = [5.0, 4.0, 6.0, 1.0, 9.0, 8.0, 2.0, 7.0, 3.0]
    answers = [service.report(unique_name, i, step=0, value=v + 1).should_stop for i, v in
               enumerate(values)]  # fmt: skip
    assert answers == [False] * 9  # step 0 is before the first rung
    stops = [service.report(unique_name, i, step=1, value=v).should_stop for i, v in
             enumerate(values)]  # fmt: skip
    assert [i for i, s in enumerate(stops) if s] == [2, 4, 5, 7]
    got = states(service, unique_name)
    for i, v in enumerate(values):
        trial = service.get_trial(unique_name, i)
        if stops[i]:
            assert got[i] == TrialState.PRUNED and trial.values == {"loss": v}
            assert trial.completed_at is not None
            assert [(m.step, m.value) for m in trial.intermediate] == [(0, v + 1), (1, v)]
        else:
            assert got[i] == TrialState.RUNNING and trial.values is None
    # A pruned trial is final; the runner stops on should_stop anyway.
    with pytest.raises(TrialFinishedError):
        service.observe(unique_name, 2, {"loss": 0.0})
    with pytest.raises(TrialFinishedError):
        service.report(unique_name, 2, step=2, value=0.0)
    # The survivors go on: trial 3 (best) passes the rung at step 3, trial 0 is then stopped.
    assert service.report(unique_name, 3, step=3, value=0.5).should_stop is False
    assert service.report(unique_name, 0, step=3, value=4.5).should_stop is True
    assert service.get_trial(unique_name, 0).values == {"loss": 4.5}


def test_median_and_percentile(service: StudyService, unique_name: str) -> None:
    for kind, cfg in (("median", {"type": "median", "min_trials": 2}),
                      ("p25", {"type": "percentile", "percentile": 25, "min_trials": 2})):  # fmt: skip
        name = f"{unique_name}_{kind}"
        make(service, name, cfg)
        service.suggest(name, count=4)
        for number, curve in ((0, [1.0, 0.8, 0.6]), (1, [2.0, 1.8, 1.6])):
            for step, v in enumerate(curve):
                assert service.report(name, number, step=step, value=v).should_stop is False
            service.observe(name, number, {"loss": curve[-1]})
        # Averages up to step 1: 0.9 and 1.9 -> median 1.4, 25th percentile 1.15.
        assert service.report(name, 2, step=0, value=1.3).should_stop is False
        stop = service.report(name, 2, step=1, value=1.3).should_stop
        assert stop is (kind == "p25")
        assert service.report(name, 3, step=0, value=1.5).should_stop is False
        assert service.report(name, 3, step=1, value=1.5).should_stop is True
        assert service.get_trial(name, 3).values == {"loss": 1.5}


def test_hyperband_brackets_by_trial_number(service: StudyService, unique_name: str) -> None:
    make(
        service,
        unique_name,
        {"type": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
    )
    service.suggest(unique_name, count=6)  # 3 brackets: trial n goes to bracket n % 3
    assert service.report(unique_name, 0, step=1, value=1.0).should_stop is False
    assert service.report(unique_name, 3, step=1, value=2.0).should_stop is True  # bracket 0
    # Bracket 1 has its first rung at step 3: a worse value at step 1 goes on.
    assert service.report(unique_name, 1, step=1, value=5.0).should_stop is False
    assert service.report(unique_name, 4, step=3, value=0.5).should_stop is False
    assert service.report(unique_name, 1, step=3, value=5.0).should_stop is True
    assert states(service, unique_name) == {
        0: TrialState.RUNNING,
        1: TrialState.PRUNED,
        2: TrialState.RUNNING,
        3: TrialState.PRUNED,
        4: TrialState.RUNNING,
        5: TrialState.RUNNING,
    }


def test_patience_and_pruned_trials_are_never_best(service: StudyService, unique_name: str) -> None:
    make(service, unique_name, {"type": "patience", "patience": 2, "lower": -10.0}, max_trials=3)
    service.suggest(unique_name, count=3)
    assert [service.report(unique_name, 0, step=s, value=1.0).should_stop for s in range(3)] == [
        False,
        False,
        True,
    ]
    # Below the threshold: pruned though its value would be the best of the study.
    assert service.report(unique_name, 1, step=0, value=-100.0).should_stop is True
    assert service.get_trial(unique_name, 1).values == {"loss": -100.0}
    assert service.best_trials(unique_name) == []
    service.observe(unique_name, 2, {"loss": 2.0})
    assert [t.number for t in service.best_trials(unique_name)] == [2]
    # Pruned trials count toward max_trials and appear in listings.
    study = service.get_study(unique_name)
    assert study.state == StudyState.COMPLETED
    pruned = service.list_trials(unique_name, state=TrialState.PRUNED)
    assert [t.number for t in pruned.items] == [0, 1]


def test_several_objectives_stop_on_the_primary(service: StudyService, unique_name: str) -> None:
    make(
        service,
        unique_name,
        {"type": "asha", "min_resource": 1},
        objectives={"acc": "maximize", "loss": "minimize"},
    )
    service.suggest(unique_name, count=2)
    assert service.report(unique_name, 0, step=1, value=0.9).should_stop is False
    assert service.report(unique_name, 1, step=1, value=0.5).should_stop is True
    assert service.get_trial(unique_name, 1).values == {"acc": 0.5}
    service.observe(unique_name, 0, {"acc": 0.4, "loss": 1.0})
    assert [t.number for t in service.best_trials(unique_name)] == [0]


def test_no_stopper_report_is_three_statements(service: StudyService, unique_name: str) -> None:
    from sqlalchemy import event

    make(service, unique_name, None)
    service.suggest(unique_name)
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
        assert service.report(unique_name, 0, step=1, value=1.0).should_stop is False
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # trial with its study, upsert the value, heartbeat: no lock, no curves
    assert len(statements) <= 3, statements


# -- races -------------------------------------------------------------------------------------
class TickClock:
    """Every call is 1 ms later: the order of the reports' transactions shows in heartbeats."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(milliseconds=1)
            return self.now


@pytest.mark.parametrize("stopper", ["asha", "median"])
def test_racing_reports_decide_as_in_some_sequential_order(
    db_url: str, unique_name: str, stopper: str
) -> None:
    """Threads report at the same rung at once. Replaying the reports one by one in the order
    their transactions ran (their heartbeats) with the pure stopper gives the same answers."""
    n_threads = 12
    cfg: dict[str, Any] = (
        {"type": "asha", "min_resource": 1, "reduction_factor": 3}
        if stopper == "asha"
        else {"type": "median", "min_trials": 1}
    )
    svc = StudyService(db_url, clock=TickClock())
    try:
        make(svc, unique_name, cfg)
        svc.suggest(unique_name, count=n_threads + 2)
        # Two finished references for the median rule (harmless for ASHA).
        for number, v in ((n_threads, 6.5), (n_threads + 1, 5.5)):
            svc.report(unique_name, number, step=0, value=v)
            svc.report(unique_name, number, step=1, value=v)
            svc.observe(unique_name, number, {"loss": v})
        values = [float((7 * i) % n_threads) for i in range(n_threads)]  # a shuffled 0..11
        for i in range(n_threads):
            assert svc.report(unique_name, i, step=0, value=100.0).should_stop is False
        answers: dict[int, bool] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads)

        def worker(i: int) -> None:
            try:
                barrier.wait()
                answers[i] = svc.report(unique_name, i, step=1, value=values[i]).should_stop
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        trials = {t.number: t for t in svc.list_trials(unique_name, limit=1000).items}
    finally:
        svc.close()

    order = sorted(range(n_threads), key=lambda i: trials[i].heartbeat_at or datetime.min)
    rule = make_stopper(cfg)
    curves = {
        n: Curve(number=n, state=TrialState.COMPLETED, values={0: v, 1: v})
        for n, v in ((n_threads, 6.5), (n_threads + 1, 5.5))
    }
    for i in range(n_threads):
        curves[i] = Curve(number=i, state=TrialState.RUNNING, values={0: 100.0})
    expected: dict[int, bool] = {}
    for i in order:
        curves[i] = Curve(number=i, state=TrialState.RUNNING, values={0: 100.0, 1: values[i]})
        others = [c for n, c in curves.items() if n != i]
        expected[i] = rule.should_stop(curves[i], others, direction=Direction.MINIMIZE)
        if expected[i]:
            curves[i] = Curve(number=i, state=TrialState.PRUNED, values=curves[i].values)
    assert answers == expected
    assert sum(not s for s in answers.values()) == sum(not s for s in expected.values())
    assert any(expected.values())  # the rule did stop some
    for i, stopped in answers.items():
        assert trials[i].state == (TrialState.PRUNED if stopped else TrialState.RUNNING)
