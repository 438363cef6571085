from __future__ import annotations

import numpy as np
import pytest

from trainers import TrainData, load_dataset, split_dataset


def _tiny(name: str, rows: int) -> TrainData:
    """A small, fixed slice of a bundled dataset so each fit takes milliseconds."""
    data = split_dataset(load_dataset(name), seed=0).tuning_data()
    rng = np.random.default_rng(0)
    tr = rng.choice(len(data.y_train), size=min(rows, len(data.y_train)), replace=False)
    va = rng.choice(len(data.y_valid), size=min(rows // 2, len(data.y_valid)), replace=False)
    return TrainData(
        X_train=data.X_train[tr],
        y_train=data.y_train[tr],
        X_valid=data.X_valid[va],
        y_valid=data.y_valid[va],
        task=data.task,
        feature_names=data.feature_names,
        n_classes=data.n_classes,
        name=name,
    )


@pytest.fixture(scope="session")
def binary() -> TrainData:
    return _tiny("breast_cancer", 200)


@pytest.fixture(scope="session")
def multiclass() -> TrainData:
    return _tiny("digits", 300)


@pytest.fixture(scope="session")
def regression() -> TrainData:
    return _tiny("diabetes", 200)
