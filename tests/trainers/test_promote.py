"""Promotion: retrain the best trial, score it on the test split, register, promote if better.

No cluster here: the best trial is built by hand, the registry is a SQLite file in ``tmp_path``.
The end-to-end path (``autotune run`` on a LocalCluster, then serving) is
``tests/autotune/test_cli_run.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from autotune.errors import ValidationError
from autotune.models import Trial, TrialState
from serving import ModelRegistry
from serving.loaders import LoaderOptions, load_predictor
from trainers import evaluate, parse_spec
from trainers.promote import promote_best, promotion_settings, retrain

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _spec(file: str, **changes: Any) -> Any:
    data = yaml.safe_load((STUDIES / file).read_text())
    for key, value in changes.items():
        data[key] = value
    return parse_spec(data, source=file)


def _trial(number: int, params: dict[str, Any], **metadata: Any) -> Trial:
    return Trial(
        number=number,
        state=TrialState.COMPLETED,
        params=params,
        values={"log_loss": 0.1},
        metadata={"metrics": {"log_loss": 0.1, "accuracy": 0.95}, **metadata},
    )


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    reg = ModelRegistry(f"sqlite:///{tmp_path / 'r.db'}", store=tmp_path / "store")
    yield reg
    reg.close()


XGB_PARAMS = {
    "eta": 0.2,
    "max_depth": 3,
    "min_child_weight": 1.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "lambda": 1.0,
}


def test_xgboost_registers_scores_on_test_and_promotes_only_if_better(registry) -> None:
    spec = _spec("xgb_breast_cancer.yaml")
    splits = spec.load_splits()
    good = _trial(3, XGB_PARAMS, trainer_info={"best_iteration": 29})
    first = promote_best(spec, good, registry=registry, splits=splits)
    assert (first.version, first.promoted, first.incumbent_version) == (1, True, None)
    assert "registered xgb_breast_cancer v1" in first.summary()
    assert first.summary().endswith("-> promoted")

    v1 = registry.get_version("xgb_breast_cancer", "production")
    assert v1.version == 1 and v1.artifact.format == "xgboost-ubj"
    # The refit trains the rounds the trial kept, without early stopping on the test split.
    assert v1.params["num_boost_round"] == 30 and v1.params["early_stopping_rounds"] is None
    assert v1.params["tree_method"] == "hist"  # the spec's fixed parameters too
    lin = v1.lineage.model_dump()
    assert lin["study"] == "xgb_breast_cancer" and lin["trial"] == 3
    assert lin["dataset"] == "breast_cancer" and lin["dataset_version"].startswith("sha256:")
    assert lin["split"]["seed"] == 0 and lin["trained_on"] == "train+validation"
    assert lin["validation_metrics"]["log_loss"] == 0.1
    assert v1.signature.names == list(splits.dataset.feature_names)
    assert {f.type for f in v1.signature.inputs} == {"float"}
    assert v1.output_schema.task == "classification"
    assert v1.output_schema.classes == ["malignant", "benign"]

    # The stored test metrics are those of the stored model on the test split.
    predictor = load_predictor(registry.store.get(v1.artifact), v1, LoaderOptions())
    x_test, y_test = splits.holdout()
    p1 = predictor.predict(x_test)
    test = evaluate("classification", y_test, np.column_stack([1 - p1, p1]))
    assert v1.metrics["log_loss"] == pytest.approx(test["log_loss"], rel=1e-5)

    # The same trial again retrains the same bytes: nothing new is registered.
    again = promote_best(spec, good, registry=registry, splits=splits)
    assert (again.registered, again.version, again.promoted) == (False, 1, False)
    assert "is production v1 already; nothing registered" in again.summary()
    assert registry.get_model("xgb_breast_cancer").versions == [1]

    # A weaker configuration (two rounds at a small rate) is registered but does not move it.
    weak = _trial(5, {**XGB_PARAMS, "eta": 0.02}, trainer_info={"best_iteration": 1})
    second = promote_best(spec, weak, registry=registry, splits=splits)
    assert (second.version, second.promoted, second.incumbent_version) == (2, False, 1)
    assert second.summary().endswith("-> not promoted (production stays)")
    detail = registry.get_model("xgb_breast_cancer")
    assert detail.aliases == {"production": 1}
    c = detail.comparisons[0]
    assert (c.candidate_version, c.incumbent_version, c.promoted) == (2, 1, False)
    assert c.metric == "log_loss" and c.direction == "minimize"
    assert c.candidate_value == pytest.approx(second.test_metrics["log_loss"])
    assert c.incumbent_value == pytest.approx(first.test_metrics["log_loss"])
    assert c.candidate_value >= c.incumbent_value


def test_settings_override_the_spec_and_bad_names_name_the_key() -> None:
    spec = _spec(
        "xgb_breast_cancer.yaml",
        promotion={"alias": "staging", "retrain_on": "train", "register": False},
    )
    s = promotion_settings(spec, model_name="bc")
    assert (s.model_name, s.alias, s.retrain_on, s.register_model) == (
        "bc",
        "staging",
        "train",
        False,
    )
    assert promotion_settings(spec, register=True).register_model is True
    with pytest.raises(ValidationError, match=r"xgb_breast_cancer.yaml: promotion.alias: '42'"):
        promotion_settings(spec, alias="42")
    with pytest.raises(ValidationError, match=r"promotion.retrain_on: 'all' is not allowed"):
        _spec("xgb_breast_cancer.yaml", promotion={"retrain_on": "all"})
    with pytest.raises(ValidationError, match=r"promotion.metric: .*'rmse'.*allowed: log_loss"):
        _spec("xgb_breast_cancer.yaml", promotion={"metric": "rmse"})


def test_retrain_on_train_only_fits_the_train_split() -> None:
    spec = _spec("xgb_breast_cancer.yaml")
    splits = spec.load_splits()
    trial = _trial(0, XGB_PARAMS, trainer_info={"best_iteration": 4})
    _, params, data = retrain(spec, trial, splits=splits, on="train")
    assert len(data.y_train) == len(splits.train) and len(data.y_valid) == len(splits.test)
    _, _, full = retrain(spec, trial, splits=splits)
    assert len(full.y_train) == len(splits.train) + len(splits.valid)
    assert params["num_boost_round"] == 5


def test_sklearn_model_is_a_skops_artifact_the_server_loads(registry) -> None:
    spec = _spec("rf_digits.yaml", promotion={"model_name": "rf", "metric": "log_loss"})
    params = {
        "n_estimators": 20,
        "max_depth": 6,
        "max_features": "sqrt",
        "min_samples_leaf": 2,
        "criterion": "gini",
    }
    out = promote_best(spec, _trial(1, params), registry=registry)
    # An explicit metric keeps its own direction (log loss: lower is better).
    assert out.promoted and out.metric == "log_loss" and out.direction == "minimize"
    v = registry.get_version("rf", 1)
    assert v.artifact.format == "sklearn-skops"
    data = registry.store.get(v.artifact)
    assert data.startswith(b"PK")  # a skops zip archive, not a pickle
    predictor = load_predictor(data, v, LoaderOptions())
    x_test, _ = spec.load_splits().holdout()
    assert predictor.predict(x_test).shape == (len(x_test), 10)


@pytest.mark.slow
def test_torch_mlp_state_dict_loads_in_the_server_loader(registry) -> None:
    spec = _spec(
        "mlp_digits.yaml",
        trainer={"type": "torch_mlp", "options": {"epochs": 3, "batch_size": 128, "device": "cpu"}},
    )
    params = {
        "hidden_units": 32,
        "n_layers": 2,
        "dropout": 0.1,
        "lr": 0.01,
        "weight_decay": 0.0001,
        "activation": "gelu",
    }
    out = promote_best(spec, _trial(0, params), registry=registry)
    assert out.version == 1 and out.promoted
    v = registry.get_version("mlp_digits", 1)
    assert v.artifact.format == "torch-state-dict"
    from trainers.torch_mlp import load_mlp

    data = registry.store.get(v.artifact)
    x_test, _ = spec.load_splits().holdout()
    served = load_predictor(data, v, LoaderOptions()).predict(x_test)
    import torch

    net, payload = load_mlp(data)
    with torch.no_grad():
        xt = (torch.as_tensor(x_test) - payload["x_mean"]) / payload["x_std"]
        direct = torch.softmax(net(xt), dim=1).numpy()
    np.testing.assert_allclose(served, direct, rtol=1e-5, atol=1e-6)
