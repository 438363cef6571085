"""Splits are fixed by the seed, disjoint, and the test split never reaches tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autotune.errors import ValidationError
from trainers import dataset_names, load_dataset, register_dataset, split_dataset
from trainers.datasets import Dataset


@pytest.mark.parametrize("name", ["breast_cancer", "digits", "wine", "diabetes"])
def test_bundled_datasets_split_deterministically(name) -> None:
    ds = load_dataset(name)
    a = split_dataset(ds, seed=7)
    b = split_dataset(ds, seed=7)
    c = split_dataset(ds, seed=8)
    for part in ("train", "valid", "test"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)
    every = np.concatenate([a.train, a.valid, a.test])
    assert len(every) == len(set(every.tolist())) == len(ds.y)  # disjoint and complete


def test_test_split_does_not_move_with_valid_fraction() -> None:
    ds = load_dataset("digits")
    a = split_dataset(ds, valid_fraction=0.1, seed=3)
    b = split_dataset(ds, valid_fraction=0.3, seed=3)
    assert np.array_equal(a.test, b.test)


def test_tuning_data_holds_no_test_rows() -> None:
    ds = load_dataset("breast_cancer")
    s = split_dataset(ds, seed=0)
    data = s.tuning_data()
    X_test, _ = s.holdout()
    seen = {row.tobytes() for row in np.concatenate([data.X_train, data.X_valid])}
    assert not any(row.tobytes() in seen for row in X_test)
    assert len(data.y_train) + len(data.y_valid) + len(X_test) == len(ds.y)


def test_classification_splits_are_stratified() -> None:
    s = split_dataset(load_dataset("wine"), seed=0)
    d = s.tuning_data()
    assert set(np.unique(d.y_valid)) == {0, 1, 2}


def test_csv_and_parquet_with_target_column(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "color": rng.choice(["red", "blue"], size=60),
            "label": rng.choice(["yes", "no"], size=60),
            "price": rng.normal(size=60) * 10,
        }
    )
    frame.to_csv(tmp_path / "d.csv", index=False)
    ds = load_dataset("csv", path=str(tmp_path / "d.csv"), target="label")
    assert ds.task == "classification" and ds.classes == ("no", "yes")
    assert ds.X.shape == (60, 4)  # a, price, color_blue, color_red
    reg = load_dataset("csv", path=str(tmp_path / "d.csv"), target="price", features=["a"])
    assert reg.task == "regression" and reg.X.shape == (60, 1)

    pytest.importorskip("pyarrow")
    frame.to_parquet(tmp_path / "d.parquet")
    pq = load_dataset("parquet", path=str(tmp_path / "d.parquet"), target="label")
    assert np.array_equal(pq.X, ds.X) and np.array_equal(pq.y, ds.y)


def test_file_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        load_dataset("csv", path=str(tmp_path / "missing.csv"), target="y")
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValidationError, match="target column 'y' is not in"):
        load_dataset("csv", path=str(tmp_path / "d.csv"), target="y")
    with pytest.raises(ValidationError, match="allowed: path, target"):
        load_dataset("csv", path="x", target="y", sep=";")


def test_registry_takes_new_loaders_once() -> None:
    def loader() -> Dataset:
        X = np.arange(20, dtype=np.float32).reshape(10, 2)
        return Dataset("toy", X, np.arange(10.0), "regression", ("p", "q"))

    register_dataset("toy_for_test", task="regression")(loader)
    assert "toy_for_test" in dataset_names()
    assert load_dataset("toy_for_test").X.shape == (10, 2)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_for_test")(lambda: loader())
