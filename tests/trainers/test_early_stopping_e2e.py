"""End to end: an XGBoost study with an ASHA stopper, where the stopper really ends trials early.

Once through the Dask runner on a 2-worker LocalCluster with an embedded SQLite file
(``sync_reports: true``, so every round's value reaches the stopper and the trainer waits for the
answer), and once in-process (the client's suggest/report/observe loop with the XGBoost trainer
called directly). Either way: some trials end pruned with their last reported value kept, they
trained fewer boosting rounds than the completed ones, and the study spends its whole budget.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

import autotune
from autotune.models import Trial, TrialState
from trainers import parse_spec, run_study
from trainers.xgboost import XGBoostTrainer

pytestmark = pytest.mark.slow

STUDIES = Path(__file__).resolve().parents[2] / "studies"
ROUNDS = 60  # rounds of a trial that is never stopped (no XGBoost early stopping)
TRIALS = 12
# Rungs at rounds 3, 9, 27 (0-based steps); each keeps the top third seen there so far.
ASHA = {"type": "asha", "min_resource": 3, "reduction_factor": 3}


def _spec(name: str) -> Any:
    data = copy.deepcopy(yaml.safe_load((STUDIES / "xgb_breast_cancer.yaml").read_text()))
    data.update(name=name, max_trials=TRIALS, algorithm="random", stopper=ASHA, sync_reports=True)
    data["trainer"]["options"] = {"num_boost_round": ROUNDS, "early_stopping_rounds": None}
    data.pop("promotion", None)
    return parse_spec(data, source="test.yaml")


def _check_pruned_trials_stopped_early(trials: list[Trial]) -> None:
    assert len(trials) == TRIALS  # the whole budget was spent
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    pruned, completed = by_state[TrialState.PRUNED], by_state[TrialState.COMPLETED]
    assert len(pruned) + len(completed) == TRIALS, {s: len(v) for s, v in by_state.items()}
    assert pruned and completed, f"{len(pruned)} pruned, {len(completed)} completed"
    for t in completed:
        assert t.intermediate[-1].step == ROUNDS - 1  # every round ran and was reported
    for t in pruned:
        last = t.intermediate[-1]
        assert t.values == {"log_loss": last.value}  # the last value is kept as its value
        assert last.step >= ASHA["min_resource"]  # never stopped before the first rung
        assert last.step < ROUNDS - 1  # it used fewer rounds than a completed trial


def test_asha_prunes_xgboost_trials_through_the_dask_runner(tmp_path: Path) -> None:
    spec = _spec("xgb_asha_dask")
    with autotune.Client(db=f"sqlite:///{tmp_path / 'at.db'}") as client:
        result = run_study(
            spec, client=client, workers=2, artifacts_dir=tmp_path / "art", progress=False
        )
        trials = client.get_study(spec.name).trials()
    assert result.n_trials == TRIALS and result.failed == 0
    assert result.pruned == sum(t.state == TrialState.PRUNED for t in trials)
    _check_pruned_trials_stopped_early(trials)
    assert result.best is not None and result.best.state == TrialState.COMPLETED


class _StudyReporter:
    def __init__(self, study: Any, number: int) -> None:
        self.study, self.number = study, number

    def report(self, step: int, value: float) -> bool:
        return self.study.report(self.number, step, value)


def test_asha_prunes_xgboost_trials_in_process() -> None:
    spec = _spec("xgb_asha_local")
    data = spec.load_splits().tuning_data()
    trainer = XGBoostTrainer(**spec.trainer.options)
    with autotune.Client(db="sqlite://") as client:  # in memory: nothing else shares it
        study = client.create_study(**spec.study_kwargs())
        for _ in range(TRIALS):
            (trial,) = study.suggest(1)
            params = {**spec.trainer.params, **trial.params}
            result = trainer.fit(
                params, data, reporter=_StudyReporter(study, trial.number), seed=trial.number
            )
            if result.stopped:  # the service already ended it as pruned
                assert result.steps < ROUNDS
                continue
            study.observe(trial.number, {"log_loss": result.metrics["log_loss"]})
        trials = study.trials()
    _check_pruned_trials_stopped_early(trials)
