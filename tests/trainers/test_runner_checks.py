"""Runner checks that need no cluster: which service workers reach, and resuming the right study."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

import autotune
from autotune.errors import ValidationError
from trainers import parse_spec, run_study
from trainers.runner import service_address

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_service_address_for_workers(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with autotune.Client(db="sqlite:///rel.db") as c:
        assert service_address(c) == f"sqlite:///{tmp_path / 'rel.db'}"  # absolute for workers
    with autotune.Client(db="sqlite://") as c, pytest.raises(ValidationError, match="in-memory"):
        service_address(c)
    http = autotune.Client("http://127.0.0.1:9/")
    assert service_address(http) == "http://127.0.0.1:9"
    http.close()


def test_resume_refuses_a_same_named_study_with_another_space(tmp_path) -> None:
    data = copy.deepcopy(yaml.safe_load((STUDIES / "xgb_breast_cancer.yaml").read_text()))
    spec = parse_spec(data, source="x.yaml")
    db = f"sqlite:///{tmp_path / 'at.db'}"
    with autotune.Client(db=db) as c:
        c.create_study(
            name=spec.name,
            space={"eta": autotune.Float(0.1, 0.2)},
            objectives={"log_loss": "minimize"},
        )
        with pytest.raises(
            ValidationError, match="x.yaml: name: .*already exists with a different space"
        ):
            run_study(spec, client=c, progress=False, artifacts_dir=tmp_path)


class _FakeStudy:
    """Answers reports like the service: slowly, stopping from step ``stop_at``."""

    def __init__(self, stop_at: int = 10**9, delay: float = 0.0, finished_at: int = 10**9):
        self.got: list[tuple[int, float]] = []
        self.stop_at, self.delay, self.finished_at = stop_at, delay, finished_at

    def report(self, number: int, step: int, value: float) -> bool:
        import time

        from autotune.errors import TrialFinishedError

        time.sleep(self.delay)
        if step >= self.finished_at:
            raise TrialFinishedError("pruned")
        self.got.append((step, value))
        return step >= self.stop_at


def test_reporter_sync_sends_every_value_and_stops_at_once() -> None:
    from trainers._worker import ServiceReporter

    study = _FakeStudy(stop_at=3)
    rep = ServiceReporter(study, 0, sync=True)
    answers = [rep.report(s, float(s)) for s in range(5)]
    rep.close()
    assert answers == [False, False, False, True, True]
    assert [s for s, _ in study.got] == [0, 1, 2, 3, 4]


def test_reporter_async_thins_but_always_sends_the_last_value() -> None:
    from trainers._worker import ServiceReporter

    study = _FakeStudy(delay=0.01)
    rep = ServiceReporter(study, 0)
    for s in range(100):  # much faster than the service answers
        rep.report(s, float(s))
    left = rep.close()  # returns at once; the last value goes to the runner if not yet stored
    steps = [s for s, _ in study.got]
    assert len(steps) < 100 and steps == sorted(steps)
    assert left == (99, 99.0) or (left is None and steps[-1] == 99)

    study = _FakeStudy()
    rep = ServiceReporter(study, 0)
    rep.report(0, 1.0)
    time.sleep(0.2)  # stored meanwhile: nothing left for the runner
    assert rep.close() is None and study.got == [(0, 1.0)]


def test_reporter_stops_when_the_service_finished_the_trial() -> None:
    from trainers._worker import ServiceReporter

    rep = ServiceReporter(_FakeStudy(finished_at=1), 0, sync=True)
    assert rep.report(0, 1.0) is False
    assert rep.report(1, 1.0) is True and rep.finished
    rep.close()
