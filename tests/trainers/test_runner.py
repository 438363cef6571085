"""The Dask runner on a real LocalCluster with 2 worker processes.

Each test starts its own cluster (a few seconds each); the service is an embedded SQLite file in
``tmp_path``, or an ``autotune serve`` subprocess on it for the restart test.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import httpx
import pytest
import yaml
from distributed import LocalCluster

import autotune
from autotune.models import TrialState
from trainers import Trainer, TrainResult, parse_spec, register_trainer, run_study
from trainers._base import TrainerOptions
from trainers.synthetic import synthetic_loss

pytestmark = pytest.mark.slow

STUDIES = Path(__file__).resolve().parents[2] / "studies"
ROOT = Path(__file__).resolve().parents[2]
# The crashing trainer below travels to the workers by value (the test module is not importable
# there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DIE_ALWAYS_X = 0.123456  # an enqueued configuration whose worker dies on every attempt


class CrashOptions(TrainerOptions):
    marker_dir: str
    duration_s: float = 0.3


@register_trainer
class CrashingTrainer(Trainer):
    """Sleeps; the first fit anywhere kills its worker process once; ``x == DIE_ALWAYS_X`` always."""

    name: ClassVar[str] = "crash_for_test"
    Options: ClassVar[type[TrainerOptions]] = CrashOptions

    def metrics(self, task: str) -> tuple[str, ...]:
        return ("loss",)

    def fit(self, params: Mapping[str, Any], data, *, reporter=None, metric=None, seed=0):
        opts = self.options
        if params["x"] == DIE_ALWAYS_X:
            time.sleep(0.1)
            os._exit(1)
        try:  # exactly one process wins the marker and dies in the middle of its trial
            fd = os.open(Path(opts.marker_dir) / "died-once", os.O_CREAT | os.O_EXCL)
            os.close(fd)
            if reporter is not None:
                reporter.report(0, 1.0)
            time.sleep(0.1)
            os._exit(1)
        except FileExistsError:
            pass
        time.sleep(opts.duration_s)
        if reporter is not None:
            reporter.report(0, synthetic_loss(params))
        return TrainResult(metrics={"loss": synthetic_loss(params)}, steps=1)


def _xgb_spec(name: str, max_trials: int) -> Any:
    data = yaml.safe_load((STUDIES / "xgb_breast_cancer.yaml").read_text())
    data = copy.deepcopy(data)
    data.update(name=name, max_trials=max_trials, algorithm="random")
    data.pop("stopper", None)
    data["trainer"]["options"] = {"num_boost_round": 40, "early_stopping_rounds": 10}
    return parse_spec(data, source="test.yaml")


def _sleep_spec(name: str, max_trials: int, trainer: dict, metric: str = "loss") -> Any:
    return parse_spec(
        {
            "name": name,
            "dataset": {"name": "wine"},
            "trainer": trainer,
            "objectives": {metric: "minimize"},
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "max_trials": max_trials,
            "algorithm": "random",
        },
        source="test.yaml",
    )


def test_xgboost_study_on_two_workers_resumes(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'at.db'}"
    spec = _xgb_spec("xgb_bc", 6)
    client = autotune.Client(db=db)
    # An interrupted earlier run: trial 0 completed, trial 1 left running by a dead runner.
    study = client.create_study(**spec.study_kwargs(), load_if_exists=True)
    first, orphan = study.suggest(2)
    study.observe(first, {"log_loss": 0.5})

    result = run_study(
        spec, client=client, workers=2, artifacts_dir=tmp_path / "art", progress=False
    )
    assert result.completed == 6 and result.failed == 0
    assert sorted(o.number for o in result.ran) == [1, 2, 3, 4, 5]  # the orphan ran again
    assert len({o.worker for o in result.ran}) == 2  # both workers were used
    trials = {t.number: t for t in study.trials()}
    assert all(t.state == TrialState.COMPLETED for t in trials.values())
    for n in range(1, 6):
        t = trials[n]
        art = t.metadata["artifact"]
        assert art["path"] == str(tmp_path / "art" / "xgb_bc" / str(n) / "model.ubj")
        assert hashlib.sha256(Path(art["path"]).read_bytes()).hexdigest() == art["sha256"]
        assert t.intermediate, "intermediate values were reported"
        assert t.intermediate[-1].step == t.metadata["steps"] - 1  # the last round always arrives
        assert set(t.values) == {"log_loss"} and "accuracy" in t.metadata["metrics"]
    assert result.best is not None and result.best.values["log_loss"] < 0.5
    assert not list((tmp_path / "art").rglob(".attempts-*"))  # start counts cleaned up

    again = run_study(
        spec, client=client, workers=2, artifacts_dir=tmp_path / "art", progress=False
    )
    assert again.ran == [] and again.completed == 6  # resumed: nothing left to run
    client.close()


def test_killed_worker_costs_at_most_its_trial(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'at.db'}"
    spec = _sleep_spec(
        "crashy", 6, {"type": "crash_for_test", "options": {"marker_dir": str(tmp_path)}}
    )
    client = autotune.Client(db=db)
    study = client.create_study(**spec.study_kwargs(), load_if_exists=True)
    study.enqueue({"x": DIE_ALWAYS_X})  # trial 0: its worker dies on both attempts

    result = run_study(
        spec, client=client, workers=2, max_attempts=2, artifacts_dir=tmp_path, progress=False
    )
    trials = study.trials()
    assert len(trials) == 6 and result.n_trials == 6  # the budget completed, nothing lost
    assert (tmp_path / "died-once").exists()  # one other trial lost its worker once
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert [t.number for t in by_state[TrialState.FAILED]] == [0]
    assert (
        "WorkerDied: the worker running this trial died 2 times"
        in by_state[TrialState.FAILED][0].error
    )
    assert len(by_state[TrialState.COMPLETED]) == 5 and not by_state[TrialState.RUNNING]
    client.close()


def test_trainer_error_fails_the_trial_with_its_message(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'at.db'}"
    # The space's "x" is not a Ridge parameter: every trial raises TypeError on the worker.
    trainer = {"type": "sklearn", "options": {"estimator": "sklearn.linear_model.RidgeClassifier"}}
    spec = _sleep_spec("bad_params", 2, trainer, "accuracy")
    # An existing cluster, reached by its scheduler address (as with --scheduler tcp://...).
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        result = run_study(
            spec,
            client=db,
            scheduler=cluster.scheduler_address,
            artifacts_dir=tmp_path,
            progress=False,
        )
    assert result.failed == 2 and result.completed == 0
    with autotune.Client(db=db) as client:
        errors = [t.error for t in client.get_study("bad_params").trials()]
    assert all(e.startswith("TypeError: ") and "'x'" in e for e in errors), errors
    assert all("Traceback" not in e for e in errors)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"autotune serve exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("autotune serve did not become healthy")


def test_runner_survives_a_service_restart(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'at.db'}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    servers = [_serve(db, port)]
    spec = _sleep_spec("restart", 8, {"type": "sleep", "options": {"duration_s": 0.6, "steps": 3}})
    restarted = threading.Event()

    def restart_when_two_done() -> None:
        watcher = autotune.Client(db=db)  # reads the same file while the server is down
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    n = watcher.get_study("restart").count_trials(TrialState.COMPLETED)
                except autotune.NotFoundError:
                    n = 0
                if n >= 2:
                    break
                time.sleep(0.05)
            servers[0].kill()
            servers[0].wait()
            time.sleep(1.5)  # trials finish and report while nobody answers
            servers.append(_serve(db, port))
            restarted.set()
        finally:
            watcher.close()

    killer = threading.Thread(target=restart_when_two_done, daemon=True)
    killer.start()
    try:
        result = run_study(spec, client=url, workers=2, artifacts_dir=tmp_path, progress=False)
        killer.join(timeout=60)
        assert restarted.is_set()
        assert result.completed == 8 and result.failed == 0
        with autotune.Client(db=db) as c:
            states = [t.state for t in c.get_study("restart").trials()]
        assert states == [TrialState.COMPLETED] * 8
    finally:
        for p in servers:
            p.kill()
            p.wait()
