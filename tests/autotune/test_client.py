"""The client suite: every test runs embedded and over HTTP (a real uvicorn server), on SQLite
and on PostgreSQL (see ``client`` in conftest.py), and must behave the same."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

import autotune
from autotune import (
    AlreadyExistsError,
    Categorical,
    Float,
    Int,
    NotFoundError,
    StudyNotActiveError,
    StudyState,
    TrialFinishedError,
    TrialState,
    ValidationError,
)
from autotune.client import Client, StudyClient, TrialPruned

SPACE = {
    "lr": Float(1e-3, 0.3, log=True),
    "depth": Int(2, 12),
    "booster": Categorical(["gbtree", "dart"]),
}
SPACE_JSON = {
    "lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
    "depth": {"type": "int", "low": 2, "high": 12},
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
}

CANONICAL_SPACE = autotune.SearchSpace(SPACE_JSON).to_json()


def loss(params: dict) -> float:
    return (math.log10(params["lr"]) + 1.5) ** 2 + (params["depth"] - 6) ** 2 / 10


@pytest.fixture
def study(client: Client, unique_name: str) -> StudyClient:
    return client.create_study(unique_name, SPACE, {"loss": "minimize"}, seed=7)


# -- studies ----------------------------------------------------------------------------------
def test_create_get_list_delete(client: Client, unique_name: str) -> None:
    study = client.create_study(
        unique_name,
        SPACE,
        {"loss": "minimize"},
        constraints={"latency_ms": ("<=", 20)},
        max_trials=50,
        algorithm="random",
        seed=3,
        metadata={"owner": "tests"},
    )
    assert study.name == unique_name
    info = client.get_study(unique_name).info
    assert info.name == unique_name
    assert info.space == CANONICAL_SPACE
    assert info.objectives == {"loss": "minimize"}
    assert info.constraints == {"latency_ms": ("<=", 20.0)}
    assert (info.max_trials, info.algorithm, info.seed) == (50, "random", 3)
    assert info.metadata == {"owner": "tests"}
    assert info.state == StudyState.ACTIVE
    assert unique_name in [s.name for s in client.list_studies()]

    client.delete_study(unique_name)
    with pytest.raises(NotFoundError):
        client.get_study(unique_name)
    assert unique_name not in [s.name for s in client.list_studies()]


def test_space_as_json_dicts_equals_objects(client: Client, unique_name: str) -> None:
    a = client.create_study(unique_name + "_a", SPACE, {"loss": "minimize"})
    b = client.create_study(unique_name + "_b", SPACE_JSON, {"loss": "minimize"})
    assert a.info.space == b.info.space == CANONICAL_SPACE


def test_load_if_exists(client: Client, unique_name: str) -> None:
    first = client.create_study(unique_name, SPACE, {"loss": "minimize"})
    with pytest.raises(AlreadyExistsError):
        client.create_study(unique_name, SPACE, {"loss": "minimize"})
    again = client.create_study(unique_name, SPACE, {"loss": "minimize"}, load_if_exists=True)
    assert again.info.id == first.info.id


def test_list_studies_filters_by_state(client: Client, unique_name: str) -> None:
    names = [f"{unique_name}_{i}" for i in range(3)]
    for n in names:
        client.create_study(n, {"x": Float(0, 1)})
    client.get_study(names[1]).pause()
    paused = {s.name for s in client.list_studies(state="paused")}
    active = {s.name for s in client.list_studies(state=StudyState.ACTIVE)}
    assert names[1] in paused and names[1] not in active
    assert {names[0], names[2]} <= active


def test_pause_resume_complete(study: StudyClient) -> None:
    assert study.pause().state == StudyState.PAUSED
    with pytest.raises(StudyNotActiveError):
        study.suggest()
    assert study.resume().state == StudyState.ACTIVE
    assert len(study.suggest()) == 1
    assert study.complete().state == StudyState.COMPLETED
    with pytest.raises(StudyNotActiveError):
        study.suggest()
    assert study.info.state == StudyState.COMPLETED


# -- trials -----------------------------------------------------------------------------------
def test_suggest_observe_loop(study: StudyClient) -> None:
    seen = []
    for _ in range(10):
        [trial] = study.suggest()
        assert trial.state == TrialState.RUNNING
        assert set(trial.params) == set(SPACE)
        done = study.observe(trial, {"loss": loss(trial.params)})
        assert done.state == TrialState.COMPLETED
        assert done.values == {"loss": pytest.approx(loss(trial.params))}
        seen.append(trial.number)
    assert seen == list(range(10))
    trials = study.trials()
    assert [t.number for t in trials] == seen
    assert all(t.state == TrialState.COMPLETED for t in trials)
    assert study.count_trials() == 10 and study.info.n_trials == 10


def test_suggest_many_and_client_id_is_idempotent(study: StudyClient) -> None:
    trials = study.suggest(3)
    assert [t.number for t in trials] == [0, 1, 2]
    first = study.suggest(2, client_id="worker-1")
    again = study.suggest(2, client_id="worker-1")
    assert [t.number for t in again] == [t.number for t in first] == [3, 4]
    assert study.count_trials("running") == 5


def test_observe_accepts_number_and_bare_float(study: StudyClient) -> None:
    a, b = study.suggest(2)
    assert study.observe(a.number, 0.5).values == {"loss": 0.5}
    assert study.observe(b, {"loss": 0.25}, metadata={"host": "w1"}).metadata == {"host": "w1"}


def test_best_trial_minimize_and_maximize(client: Client, unique_name: str) -> None:
    for direction, expected in (("minimize", 0.1), ("maximize", 0.9)):
        study = client.create_study(
            f"{unique_name}_{direction}", {"x": Float(0, 1)}, {"acc": direction}
        )
        assert study.best_trials == []
        for v in (0.5, 0.1, 0.9, 0.3):
            [t] = study.suggest()
            study.observe(t, {"acc": v})
        assert study.best_trial.values == {"acc": expected}
        assert [t.values for t in study.best_trials] == [{"acc": expected}]


def test_pareto_set_with_two_objectives(client: Client, unique_name: str) -> None:
    study = client.create_study(
        unique_name, {"x": Float(0, 1)}, {"loss": "minimize", "latency": "minimize"}
    )
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (6, 6), (2, 4)]
    for loss_, latency in points:
        [t] = study.suggest()
        study.observe(t, {"loss": loss_, "latency": latency})
    pareto = {(t.values["loss"], t.values["latency"]) for t in study.best_trials}
    assert pareto == {(1, 5), (2, 2), (5, 1)}
    with pytest.raises(ValidationError, match="best_trials"):
        _ = study.best_trial


def test_report_fail_heartbeat(study: StudyClient) -> None:
    a, b = study.suggest(2)
    assert study.report(a, 1, 0.5) is False
    assert study.report(a, 3, 0.2) is False
    steps = [(m.step, m.value) for m in study.get_trial(a.number).intermediate]
    assert steps == [(1, 0.5), (3, 0.2)]

    beat = study.heartbeat(b)
    assert beat.state == TrialState.RUNNING and beat.heartbeat_at is not None

    failed = study.fail(b, "CUDA out of memory")
    assert failed.state == TrialState.FAILED
    assert study.get_trial(b.number).error == "CUDA out of memory"
    with pytest.raises(TrialFinishedError):
        study.heartbeat(b)
    with pytest.raises(TrialFinishedError):
        study.observe(b, {"loss": 1.0})


def test_enqueue_goes_first(study: StudyClient) -> None:
    params = {"lr": 0.01, "depth": 4, "booster": "dart"}
    queued = study.enqueue(params)
    assert queued.params == params
    [t] = study.suggest()
    assert t.params == params
    with pytest.raises(ValidationError):
        study.enqueue({"lr": 5.0, "depth": 4, "booster": "dart"})


def test_max_trials_is_held(client: Client, unique_name: str) -> None:
    study = client.create_study(unique_name, {"x": Float(0, 1)}, max_trials=3)
    assert len(study.suggest(5)) == 3
    assert study.suggest() == []  # the budget is spent: nothing more, and no error
    assert study.count_trials() == 3


# -- optimize and trial() ---------------------------------------------------------------------
def test_optimize_with_two_threads(study: StudyClient) -> None:
    threads = set()

    def objective(t: autotune.client.ActiveTrial) -> float:
        threads.add(threading.get_ident())
        time.sleep(0.01)
        return loss(t.params)

    finished = study.optimize(objective, 12, n_jobs=2)
    assert len(finished) == 12
    numbers = sorted(t.number for t in study.trials())
    assert numbers == list(range(12))
    assert all(t.state == TrialState.COMPLETED for t in study.trials())
    assert len(threads) == 2
    assert study.best_trial.values["loss"] == min(t.values["loss"] for t in finished)


def test_optimize_fails_trial_and_reraises_unless_caught(study: StudyClient) -> None:
    calls = []

    def objective(t: autotune.client.ActiveTrial) -> dict:
        calls.append(t.number)
        if len(calls) == 2:
            raise KeyError("bad fold")
        return {"loss": 1.0}

    with pytest.raises(KeyError, match="bad fold"):
        study.optimize(objective, 5)
    assert len(calls) == 2
    assert study.get_trial(1).state == TrialState.FAILED
    assert "bad fold" in study.get_trial(1).error

    calls.clear()
    study.optimize(objective, 3, catch=(KeyError,))
    assert len(calls) == 3
    states = [t.state for t in study.trials()]
    assert states.count(TrialState.FAILED) == 2 and len(states) == 5


def test_optimize_nan_result_fails_trial_and_goes_on(study: StudyClient) -> None:
    with pytest.warns(RuntimeWarning, match="nan"):
        finished = study.optimize(lambda t: float("nan") if t.number == 0 else 1.0, 3)
    assert [t.state for t in finished] == [TrialState.FAILED] + [TrialState.COMPLETED] * 2


def test_optimize_stops_at_max_trials(client: Client, unique_name: str) -> None:
    study = client.create_study(unique_name, {"x": Float(0, 1)}, max_trials=4)
    finished = study.optimize(lambda t: t["x"], 10, n_jobs=2)
    assert len(finished) == 4 and study.count_trials() == 4


def test_trial_context_observes_values(study: StudyClient) -> None:
    with study.trial() as t:
        assert t.state == TrialState.RUNNING
        assert t.report(0, 3.0) is False
        t.observe({"loss": loss(t.params)})
    assert t.state == TrialState.COMPLETED
    with study.trial() as t2:
        t2.values = {"loss": 0.5}
    assert study.get_trial(t2.number).values == {"loss": 0.5}


def test_trial_context_fails_on_exception(study: StudyClient) -> None:
    with pytest.raises(RuntimeError, match="diverged"), study.trial() as t:
        t.observe({"loss": 1.0})  # sent only when the block ends well
        raise RuntimeError("loss diverged at step 7")
    trial = study.get_trial(t.number)
    assert trial.state == TrialState.FAILED
    assert trial.values is None
    assert "RuntimeError: loss diverged at step 7" in trial.error


def test_trial_context_without_values_fails(study: StudyClient) -> None:
    with pytest.raises(ValidationError, match="without values"), study.trial() as t:
        pass
    assert study.get_trial(t.number).state == TrialState.FAILED


def test_trial_context_sends_heartbeats(client: Client, unique_name: str) -> None:
    study = client.create_study(unique_name, {"x": Float(0, 1)}, heartbeat_grace_s=3.0)
    with study.trial() as t:
        first = study.get_trial(t.number).heartbeat_at or study.get_trial(t.number).created_at
        time.sleep(3.0)  # heartbeat every max(1, 3/3) = 1 s
        later = study.get_trial(t.number).heartbeat_at
        t.observe({"value": 1.0})
    assert later is not None and later > first


def test_stopper_prunes_trials_in_trial_and_optimize(client: Client, unique_name: str) -> None:
    study = client.create_study(
        unique_name,
        {"x": Float(0, 1)},
        {"loss": "minimize"},
        stopper={"type": "patience", "upper": 10.0},  # stop once a value rises above 10
    )
    with study.trial() as t:
        assert t.report(0, 1.0) is False
        assert t.report(1, 11.0) is True
        assert study.report(t, 2, 12.0) is True  # already pruned: still "stop", no error
        t.observe({"loss": 11.0})  # ignored: the stopper ended the trial
    assert t.state == TrialState.PRUNED
    assert study.get_trial(t.number).values == {"loss": 11.0}

    with study.trial() as t2:
        if t2.report(0, 50.0):
            raise TrialPruned()
    assert t2.state == TrialState.PRUNED

    with study.trial() as t3:
        raise TrialPruned("not good enough")  # no stopper said so: only a failure is possible
    assert study.get_trial(t3.number).state == TrialState.FAILED
    assert "pruned by the objective" in study.get_trial(t3.number).error

    def objective(t: autotune.client.ActiveTrial) -> float | None:
        for step in range(5):
            if t.report(step, step * 5.0):  # 0, 5, 10, 15: stops at step 3
                return None
        return 1.0

    finished = study.optimize(objective, 3, n_jobs=2)
    assert [f.state for f in finished] == [TrialState.PRUNED] * 3
    with pytest.raises(TrialFinishedError):
        study.observe(finished[0], 1.0)


# -- errors are the same over both transports -------------------------------------------------
def test_error_types(client: Client, study: StudyClient, unique_name: str) -> None:
    [t] = study.suggest()
    with pytest.raises(ValidationError) as e:
        study.observe(t, {"loss": float("nan")})
    assert e.value.code == "invalid_argument"
    with pytest.raises(ValidationError):
        study.observe(t, {"loss": float("inf")})
    with pytest.raises(ValidationError):
        study.observe(t, {"accuracy": 0.3})  # not an objective
    assert study.get_trial(t.number).state == TrialState.RUNNING  # nothing stored partially
    study.observe(t, {"loss": 0.3})
    with pytest.raises(TrialFinishedError):
        study.observe(t, {"loss": 0.2})

    with pytest.raises(NotFoundError):
        client.get_study("no_such_study")
    with pytest.raises(NotFoundError):
        client.get_study("not a valid name!")
    with pytest.raises(NotFoundError):
        study.get_trial(999)
    with pytest.raises(NotFoundError):
        client.delete_study("no_such_study")
    with pytest.raises(AlreadyExistsError):
        client.create_study(unique_name, SPACE)
    with pytest.raises(ValidationError):
        client.create_study(unique_name + "_bad", {"x": {"type": "float", "low": 1, "high": 0}})
    with pytest.raises(ValidationError):
        client.create_study("bad name!", SPACE)
    with pytest.raises(ValidationError):
        study.suggest(0)
    study.pause()
    with pytest.raises(StudyNotActiveError):
        study.suggest()
    with pytest.raises(StudyNotActiveError), study.trial():
        pass


def test_import_is_light() -> None:
    code = (
        "import sys, autotune, autotune.client\n"
        "heavy = [m for m in ('torch', 'botorch', 'sqlalchemy', 'fastapi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "autotune.Client\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the HTTP transport's retry policy, against a scripted server -----------------------------
def _scripted(*steps: object) -> tuple[object, list[object]]:
    """An HttpTransport whose requests meet ``steps`` in order: an exception class to raise, or
    a (status, json) answer. Returns the transport and the list of requests it saw."""
    import httpx

    from autotune.client._http import HttpTransport

    seen: list[httpx.Request] = []
    script = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, type):
            raise step("scripted", request=request)
        status, body = step
        return httpx.Response(status, json=body)

    t = HttpTransport(
        "http://test", retries=3, backoff=0.0, http_transport=httpx.MockTransport(handler)
    )
    return t, seen


_TRIAL = {"number": 0, "state": "running", "params": {"x": 0.5}}
_DOWN = {"error": {"code": "unavailable", "message": "database busy", "details": {}}}


def test_http_retries_connect_errors_and_503() -> None:
    import httpx

    t, seen = _scripted(httpx.ConnectError, (503, _DOWN), (200, {**_TRIAL, "state": "completed"}))
    assert t.observe("s", 0, {"loss": 1.0}, metadata=None).state == TrialState.COMPLETED
    assert len(seen) == 3


def test_http_does_not_resend_an_enqueue_that_may_have_arrived() -> None:
    import httpx

    t, seen = _scripted(httpx.ReadTimeout, (200, {"id": 1, "params": {"x": 0.5}}))
    with pytest.raises(autotune.UnavailableError, match="may or may not"):
        t.enqueue("s", {"x": 0.5})
    assert len(seen) == 1


def test_http_resent_observe_that_had_arrived_reads_the_trial_back() -> None:
    import httpx

    finished = {"error": {"code": "trial_finished", "message": "completed", "details": {}}}
    done = {**_TRIAL, "state": "completed", "values": {"loss": 1.0}}
    t, seen = _scripted(httpx.ReadTimeout, (409, finished), (200, done))
    assert t.observe("s", 0, {"loss": 1.0}, metadata=None).values == {"loss": 1.0}
    assert [r.method for r in seen] == ["POST", "POST", "GET"]
    # Finished with other values (not this call's doing): the conflict stands.
    t, _ = _scripted(httpx.ReadTimeout, (409, finished), (200, {**done, "values": {"loss": 2}}))
    with pytest.raises(TrialFinishedError):
        t.observe("s", 0, {"loss": 1.0}, metadata=None)
    # Not resent: a plain conflict, no read-back.
    t, seen = _scripted((409, finished))
    with pytest.raises(TrialFinishedError):
        t.observe("s", 0, {"loss": 1.0}, metadata=None)
    assert len(seen) == 1


def test_http_retried_suggest_sends_the_same_client_id() -> None:
    import json

    import httpx

    answer = {"trials": [_TRIAL], "study_state": "active"}
    t, seen = _scripted(httpx.ReadError, httpx.RemoteProtocolError, (200, answer))
    assert [tr.number for tr in t.suggest("s", count=1, client_id=None)] == [0]
    ids = {json.loads(r.content)["client_id"] for r in seen}
    assert len(seen) == 3 and len(ids) == 1 and ids.pop().startswith("autotune-")


def test_http_gives_up_with_unavailable_and_maps_error_bodies() -> None:
    import httpx

    t, seen = _scripted(*[httpx.ConnectError] * 4)
    with pytest.raises(autotune.UnavailableError, match="after 4 attempt"):
        t.get_study("s")
    t, _ = _scripted(*[(503, _DOWN)] * 4)
    with pytest.raises(autotune.UnavailableError, match="database busy"):
        t.get_study("s")
    body = {"error": {"code": "trial_finished", "message": "done", "details": {}}}
    t, _ = _scripted((409, body))
    with pytest.raises(TrialFinishedError, match="done"):
        t.fail("s", 0, reason="x")
    t, _ = _scripted((502, "<html>bad gateway</html>"))
    with pytest.raises(autotune.AutotuneError, match="502"):
        t.get_study("s")
