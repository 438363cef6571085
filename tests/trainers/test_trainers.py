"""Every trainer on tiny data: metrics, one report per step, and an early stop when told."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from autotune.errors import ValidationError
from trainers import (
    RecordingReporter,
    SklearnTrainer,
    SleepTrainer,
    TorchMLPTrainer,
    XGBoostTrainer,
    cross_validate,
    evaluate,
    make_trainer,
    trainer_names,
)
from trainers._base import Trainer, register_trainer


def test_registry_names_and_duplicates() -> None:
    assert {"xgboost", "sklearn", "torch_mlp", "sleep"} <= set(trainer_names())
    assert isinstance(make_trainer("xgboost", {"num_boost_round": 5}), XGBoostTrainer)

    class Other(Trainer):
        name = "xgboost"

        def fit(self, params, data, *, reporter=None, metric=None, seed=0):  # pragma: no cover
            raise NotImplementedError

    with pytest.raises(ValueError, match="already taken"):
        register_trainer(Other)
    with pytest.raises(ValidationError, match="allowed: .*xgboost"):
        make_trainer("xgbost")


def test_evaluate_known_values() -> None:
    m = evaluate("classification", np.array([0, 1]), np.array([[0.8, 0.2], [0.4, 0.6]]))
    assert m["accuracy"] == 1.0
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    r = evaluate("regression", np.array([1.0, 3.0]), np.array([2.0, 3.0]))
    assert r["rmse"] == pytest.approx(math.sqrt(0.5))
    assert r["mae"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("fixture", "metric"),
    [("binary", "log_loss"), ("multiclass", "accuracy"), ("regression", "rmse")],
)
def test_xgboost_reports_every_round(request, fixture, metric) -> None:
    data = request.getfixturevalue(fixture)
    rep = RecordingReporter()
    res = XGBoostTrainer(num_boost_round=15, early_stopping_rounds=None).fit(
        {"eta": 0.3, "max_depth": 3}, data, reporter=rep, metric=metric, seed=1
    )
    assert [s for s, _ in rep.values] == list(range(15))
    assert res.steps == 15 and not res.stopped
    # The last reported value is the returned model's metric.
    assert rep.values[-1][1] == pytest.approx(res.metrics[metric], rel=1e-4, abs=1e-4)
    assert res.artifact is not None and res.artifact.format == "xgboost-ubj"

    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(res.artifact.data))
    assert booster.num_boosted_rounds() == 15


def test_xgboost_honours_stop_and_early_stopping(binary) -> None:
    rep = RecordingReporter(stop_after=4)
    res = XGBoostTrainer(num_boost_round=200).fit({"eta": 0.1}, binary, reporter=rep)
    assert res.stopped and res.steps == 4 and len(rep.values) == 4

    rep = RecordingReporter()
    res = XGBoostTrainer(num_boost_round=2000, early_stopping_rounds=5).fit(
        {"eta": 0.5}, binary, reporter=rep
    )
    assert not res.stopped and res.steps < 2000
    assert len(rep.values) == res.steps  # the round that triggered early stopping is reported
    assert res.info["best_iteration"] <= res.steps - 1


def test_sklearn_grows_ensembles_in_stages(multiclass) -> None:
    t = SklearnTrainer(estimator="sklearn.ensemble.RandomForestClassifier", stages=4)
    rep = RecordingReporter()
    res = t.fit({"n_estimators": 20, "max_depth": 4}, multiclass, reporter=rep)
    assert [s for s, _ in rep.values] == [4, 9, 14, 19]
    assert res.steps == 4 and 0 < res.metrics["accuracy"] <= 1
    rep = RecordingReporter(stop_after=1)
    res = t.fit({"n_estimators": 20}, multiclass, reporter=rep)
    assert res.stopped and res.steps == 1


def test_sklearn_plain_estimator_reports_once(regression) -> None:
    rep = RecordingReporter()
    res = SklearnTrainer(estimator="sklearn.linear_model.Ridge").fit(
        {"alpha": 1.0}, regression, reporter=rep, metric="r2"
    )
    assert rep.values == [(0, pytest.approx(res.metrics["r2"]))]


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("os.system", "not allowed: import paths must start with one of 'sklearn.'"),
        ("builtins.eval", "not allowed"),
        ("sklearn.ensemble.NoSuchForest", "could not be imported"),
    ],
)
def test_sklearn_refuses_paths_outside_the_allowlist(path, match) -> None:
    with pytest.raises(ValidationError, match=match) as info:
        SklearnTrainer(estimator=path)
    assert info.value.field == "trainer.options.estimator"


def test_torch_mlp_reports_per_epoch_and_stops(multiclass, regression) -> None:
    import torch

    rep = RecordingReporter()
    res = TorchMLPTrainer(epochs=3, device="cpu").fit(
        {"hidden_units": 16, "lr": 0.01}, multiclass, reporter=rep
    )
    assert [s for s, _ in rep.values] == [0, 1, 2]
    assert rep.values[-1][1] == pytest.approx(res.metrics["log_loss"])
    payload = torch.load(io.BytesIO(res.artifact.data), weights_only=True)
    assert payload["config"]["n_out"] == 10

    rep = RecordingReporter(stop_after=1)
    res = TorchMLPTrainer(epochs=5, device="cpu").fit({"n_layers": 1}, regression, reporter=rep)
    assert res.stopped and res.steps == 1 and math.isfinite(res.metrics["rmse"])

    with pytest.raises(ValidationError, match="no parameter"):
        TorchMLPTrainer(epochs=1).fit({"hiden_units": 3}, regression)


def test_cross_validation_reports_per_fold_and_stops(binary) -> None:
    t = XGBoostTrainer(num_boost_round=10, early_stopping_rounds=None)
    rep = RecordingReporter()
    res = cross_validate(t, {"max_depth": 2}, binary, folds=3, reporter=rep)
    assert [s for s, _ in rep.values] == [0, 1, 2]
    assert res.metrics["log_loss"] == pytest.approx(np.mean(res.info["per_fold"]))
    assert res.artifact is not None
    res = cross_validate(t, {}, binary, folds=3, reporter=RecordingReporter(stop_after=1))
    assert res.stopped and res.steps == 1 and res.artifact is None


def test_sleep_trainer_reports_each_step(binary) -> None:
    rep = RecordingReporter()
    res = SleepTrainer(duration_s=0.02, steps=2).fit({"x": 2.0}, binary, reporter=rep)
    assert res.metrics == {"loss": 4.0} and len(rep.values) == 2
