"""Suggestions computed ahead in the background: a suggest after an observe returns at once, a
proposal made stale by newer data is never handed out, results equal the computed-on-demand
ones, and the background threads start only when needed and stop with the service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autotune.designers import Designer, Problem, register_designer
from autotune.models import Trial
from autotune.service import StudyService
from autotune.space import Params

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "k": {"type": "categorical", "choices": ["a", "b", "c"]},
}
SLOW_S = 0.5


@register_designer("test-slow")
class SlowDesigner(Designer):
    """Slow and deterministic: the draw depends on the seed, the history and the pending ones.
    Every call is logged as (finished trials seen, pending seen, configurations returned)."""

    name = "test-slow"
    expensive = True
    calls: list[tuple[int, int, list[Params]]] = []

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        time.sleep(SLOW_S)
        total = sum(v for t in completed for v in (t.values or {}).values())
        rng = np.random.default_rng([seed, len(completed), len(pending), int(total * 1e6)])
        out = problem.space.sample(rng, count)
        SlowDesigner.calls.append((len(completed), len(pending), out))
        return out


def _precompute_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("autotune-precompute")]


@pytest.fixture(autouse=True)
def _no_thread_left() -> Iterator[None]:
    SlowDesigner.calls.clear()
    before = set(_precompute_threads())
    yield
    assert set(_precompute_threads()) <= before, "a service left its precompute thread running"


def make(svc: StudyService, name: str, **kw: Any) -> None:
    svc.create_study({"name": name, "space": SPACE, "algorithm": "test-slow", "seed": 7, **kw})


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def test_suggest_after_observe_returns_at_once(db_url: str, unique_name: str) -> None:
    with StudyService(db_url) as svc:
        assert svc.precompute
        make(svc, unique_name)
        (t0,) = svc.suggest(unique_name).trials  # computed on demand
        svc.observe(unique_name, t0.number, {"value": 0.5})
        assert svc.wait_precomputed(timeout=10)
        r, elapsed = timed(svc.suggest, unique_name)
        assert elapsed < 0.1, elapsed
        (t1,) = r.trials
        assert t1.number == 1 and r.designer == "test-slow"
        # What was handed out is what the designer computed for one finished trial.
        assert SlowDesigner.calls[-1] == (1, 0, [t1.params])
        # A suggest that arrives while the precompute runs waits for it rather than
        # computing a second time.
        svc.observe(unique_name, t1.number, {"value": 0.25})
        r, elapsed = timed(svc.suggest, unique_name)
        assert elapsed < SLOW_S * 1.8, elapsed
        assert [c[:2] for c in SlowDesigner.calls] == [(0, 0), (1, 0), (2, 0)]


def test_stale_precompute_is_not_used(sqlite_url: str, unique_name: str) -> None:
    with StudyService(sqlite_url) as svc:
        make(svc, unique_name)
        t0, t1 = svc.suggest(unique_name, count=2).trials
        svc.observe(unique_name, t0.number, {"value": 0.5})
        assert svc.wait_precomputed(timeout=10)
        assert SlowDesigner.calls[-1][:2] == (1, 1)  # computed ahead: t1 still running
        stale = SlowDesigner.calls[-1][2]
        svc._precompute = False  # the next observe leaves the stale proposal in place
        svc.observe(unique_name, t1.number, {"value": 0.75})
        (t2,) = svc.suggest(unique_name).trials
        assert SlowDesigner.calls[-1] == (2, 0, [t2.params])
        assert [t2.params] != stale


def _run_study(url: str, *, precompute: bool) -> list[Params]:
    """Two workers: each observe finishes the oldest running trial, then a suggest follows."""
    got: list[Params] = []
    with StudyService(url, precompute=precompute) as svc:
        make(svc, "seeded", max_trials=6)
        running = svc.suggest("seeded", count=2).trials
        got += [t.params for t in running]
        for i in range(4):
            done = running.pop(0)
            svc.observe("seeded", done.number, {"value": done.params["x"] + i})
            svc.wait_precomputed(timeout=10)
            (t,) = svc.suggest("seeded").trials
            running.append(t)
            got.append(t.params)
    return got


def test_results_equal_computed_on_demand(tmp_path: Path) -> None:
    on = _run_study(f"sqlite:///{tmp_path / 'on.db'}", precompute=True)
    n_on = len(SlowDesigner.calls)
    off = _run_study(f"sqlite:///{tmp_path / 'off.db'}", precompute=False)
    assert on == off
    # On: every suggest after the first used the proposal computed ahead (no second call);
    # off: one call per suggest, nothing ahead.
    assert n_on == 5 and len(SlowDesigner.calls) - n_on == 5


def test_off_by_flag_or_environment(
    sqlite_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_PRECOMPUTE", "0")
    with StudyService(sqlite_url) as svc:
        assert not svc.precompute
    monkeypatch.delenv("AUTOTUNE_PRECOMPUTE")
    with StudyService(sqlite_url, precompute=False) as svc:
        make(svc, unique_name)
        (t0,) = svc.suggest(unique_name).trials
        svc.observe(unique_name, t0.number, {"value": 1.0})
        assert _precompute_threads() == [] and svc._pool is None
        r, elapsed = timed(svc.suggest, unique_name)
        assert elapsed >= SLOW_S and len(SlowDesigner.calls) == 2


def test_cheap_designers_start_no_thread(sqlite_url: str, unique_name: str) -> None:
    with StudyService(sqlite_url) as svc:
        svc.create_study({"name": unique_name, "space": SPACE, "algorithm": "random"})
        (t0,) = svc.suggest(unique_name).trials
        svc.observe(unique_name, t0.number, {"value": 1.0})
        assert svc._pool is None


def test_close_waits_for_the_background_work(sqlite_url: str, unique_name: str) -> None:
    svc = StudyService(sqlite_url)
    make(svc, unique_name)
    (t0,) = svc.suggest(unique_name).trials
    svc.observe(unique_name, t0.number, {"value": 1.0})
    assert len(_precompute_threads()) == 1
    svc.close()  # joins the thread (the autouse fixture checks none is left)
    assert _precompute_threads() == []
