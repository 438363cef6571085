"""Serving with features: a model registered with a training set is called with entity keys
only; the resolver reads the same features (pinned group versions, same column names) from the
online store. Also the training set as a study dataset."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import customers
from test_features_store import at

from autotune.errors import ValidationError
from serving.features.resolver import FeatureStoreResolver, resolve_features
from serving.features.store import FeatureStoreService

FEATURES = ["spend", "orders"]


def _setup(fs: FeatureStoreService) -> tuple[Any, pd.DataFrame]:
    fs.apply(customers(name="cust"))
    rng = np.random.default_rng(0)
    n = 300
    hist = pd.DataFrame({
        "customer_id": np.arange(n) % 60, "ts": [at(-float(m)) for m in rng.uniform(1, 50, n)],
        "spend": rng.uniform(0, 100, n), "orders": rng.integers(0, 20, n),
    })  # fmt: skip
    fs.ingest("cust", hist)
    labels = pd.DataFrame({"customer_id": np.arange(60), "timestamp": [at(0)] * 60})
    labels["y"] = (np.arange(60) % 2).astype(int)
    ts = fs.create_training_set(
        {"name": "churn", "features": ["cust:spend", "cust:orders"], "label": "y"}, labels
    )
    return ts, fs.training_set_frame("churn")


def test_model_server_predicts_from_entity_keys(sqlite_url, tmp_path, clock) -> None:
    import xgboost as xgb

    from serving.registry import ModelRegistry
    from serving.runtime import ModelServer, ServerConfig

    fs = FeatureStoreService(sqlite_url, clock=clock)
    reg = ModelRegistry(fs.db, store=tmp_path / "store")
    try:
        ts, frame = _setup(fs)
        assert ts.columns == FEATURES
        x = frame[FEATURES].to_numpy(dtype=np.float32)
        booster = xgb.train({"objective": "binary:logistic", "nthread": 1, "max_depth": 2},
                            xgb.DMatrix(x, label=frame["y"], feature_names=FEATURES), 3)  # fmt: skip
        reg.register(
            "churn_model", artifact=bytes(booster.save_raw("ubj")), format="xgboost-ubj",
            signature=FEATURES, input_example=frame[FEATURES].head(2).to_dict("records"),
            lineage={"feature_set": ts.name, "feature_set_version": str(ts.version)},
        )  # fmt: skip
        server = ModelServer(reg, ServerConfig(preload=False), resolver=FeatureStoreResolver(fs))

        async def predict(payload: dict[str, Any]) -> np.ndarray:
            lv, _alias = await server.get("churn_model", None)
            return await lv.predict(await server.features_to_matrix(lv, payload))

        try:
            got = asyncio.run(predict({"entities": [{"customer_id": 3}, {"customer_id": 8}]}))
            want = booster.inplace_predict(x[[3, 8]])
            np.testing.assert_allclose(got, want, rtol=1e-6)
            # Same rows as sending the feature values themselves.
            rows = frame[FEATURES].iloc[[3, 8]].to_dict("records")
            np.testing.assert_allclose(asyncio.run(predict({"rows": rows})), got)
            # An unknown customer has no features: the signature check names them.
            from serving.errors import InvalidInputError

            with pytest.raises(InvalidInputError):
                asyncio.run(predict({"entities": [{"customer_id": 999}]}))
        finally:
            server.close()
    finally:
        reg.close()
        fs.close()


def test_resolve_features_and_lineage_errors(sqlite_url, clock) -> None:
    fs = FeatureStoreService(sqlite_url, clock=clock)
    try:
        ts, frame = _setup(fs)
        rows = resolve_features([{"customer_id": 5}, {"customer_id": 77}], ts.features, store=fs)
        assert rows[0] == frame.loc[5, FEATURES].to_dict() and rows[1] == dict.fromkeys(FEATURES)

        class Version:  # the fields of serving.schemas.ModelVersion the resolver reads
            name, version = "m", 1
            lineage: dict[str, Any] = {"dataset": "iris"}

        with pytest.raises(ValidationError, match="feature set"):
            FeatureStoreResolver(fs).resolve(Version(), [{"customer_id": 1}])
    finally:
        fs.close()


def test_training_set_is_a_study_dataset(sqlite_url, clock) -> None:
    import serving.features.dataset  # noqa: F401 - registers the loaders
    from trainers.datasets import dataset_names, load_dataset

    fs = FeatureStoreService(sqlite_url, clock=clock)
    try:
        ts, frame = _setup(fs)
    finally:
        fs.close()
    assert {"training_set", "feature_store"} <= set(dataset_names())
    ds = load_dataset("training_set", training_set="churn", db=sqlite_url)
    assert ds.name == f"churn@{ts.version}" and ds.feature_names == tuple(FEATURES)
    assert ds.task == "classification" and ds.X.shape == (60, 2)
    np.testing.assert_allclose(ds.X[:, 0], frame["spend"].to_numpy(dtype=np.float32))
