"""Datasets by name, and the train/validation/test splits that tuning works on.

Loaders are registered by name (``@register_dataset("digits", task="classification")``) so other
packages (the feature store's training sets) can add their own. Built in: scikit-learn's bundled
``breast_cancer``, ``digits``, ``wine`` and ``diabetes`` (nothing is downloaded), and ``csv`` and
``parquet`` files with a target column.

Splits are fixed by a seed. The test split is cut first, from the seed alone, so it does not move
when the validation fraction changes; ``Splits.tuning_data()`` holds train and validation only,
and that is all the runner ships to workers: tuning never sees the test split.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import ValidationError
from trainers._base import Task, TrainData

__all__ = [
    "Dataset",
    "Splits",
    "register_dataset",
    "load_dataset",
    "dataset_names",
    "dataset_task",
    "dataset_options",
    "split_dataset",
]

# Targets with at most this many distinct integer values are treated as classes when a file's
# task is not given.
_MAX_INFERRED_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` ``(n_rows, n_features)`` float32 and target ``y`` ``(n_rows,)``."""

    name: str
    X: np.ndarray
    y: np.ndarray
    task: Task
    feature_names: tuple[str, ...]
    target: str = "target"
    classes: tuple[Any, ...] = ()  # original labels of class codes 0..k-1

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.task == "classification" else 0


@dataclass(frozen=True)
class Splits:
    """Row indices of the three splits of one dataset (disjoint, covering every row)."""

    dataset: Dataset
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int

    def tuning_data(self) -> TrainData:
        """Train and validation splits: what trainers see while tuning."""
        d = self.dataset
        return TrainData(
            X_train=d.X[self.train],
            y_train=d.y[self.train],
            X_valid=d.X[self.valid],
            y_valid=d.y[self.valid],
            task=d.task,
            feature_names=d.feature_names,
            n_classes=d.n_classes,
            name=d.name,
        )

    def holdout(self) -> tuple[np.ndarray, np.ndarray]:
        """The test split ``(X_test, y_test)``: for scoring the final model only."""
        return self.dataset.X[self.test], self.dataset.y[self.test]

    def final_data(self) -> TrainData:
        """Train+validation as the training set and test as the evaluation set (refits)."""
        d = self.dataset
        fit = np.concatenate([self.train, self.valid])
        return TrainData(
            X_train=d.X[fit],
            y_train=d.y[fit],
            X_valid=d.X[self.test],
            y_valid=d.y[self.test],
            task=d.task,
            feature_names=d.feature_names,
            n_classes=d.n_classes,
            name=d.name,
        )


def split_dataset(
    dataset: Dataset, *, valid_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Cut ``dataset`` into train/validation/test, stratified by class for classification.

    Args:
        valid_fraction: share of all rows for validation.
        test_fraction: share of all rows held out for the final test (may be 0).
        seed: fixes the splits; the test split depends on ``seed`` and ``test_fraction`` only.
    """
    from sklearn.model_selection import train_test_split

    for key, v in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= v < 1:
            raise ValidationError(f"{key} must be in [0, 1), got {v}", field=f"dataset.{key}")
    if valid_fraction <= 0 or valid_fraction + test_fraction >= 1:
        raise ValidationError(
            f"valid_fraction ({valid_fraction}) must be > 0 and leave rows to train on "
            f"with test_fraction ({test_fraction})",
            field="dataset.valid_fraction",
        )
    n = len(dataset.y)
    rows = np.arange(n)
    strat = dataset.y if dataset.task == "classification" else None
    if test_fraction > 0:
        rest, test = train_test_split(
            rows, test_size=test_fraction, random_state=seed, stratify=strat
        )
    else:
        rest, test = rows, rows[:0]
    strat_rest = dataset.y[rest] if strat is not None else None
    train, valid = train_test_split(
        rest,
        test_size=valid_fraction / (1.0 - test_fraction),
        random_state=seed + 1,  # a different stream from the test cut
        stratify=strat_rest,
    )
    return Splits(
        dataset=dataset, train=np.sort(train), valid=np.sort(valid), test=np.sort(test), seed=seed
    )


@dataclass(frozen=True)
class _Loader:
    fn: Callable[..., Dataset]
    task: Task | None  # None when it depends on the options (files)


_LOADERS: dict[str, _Loader] = {}


def register_dataset(
    name: str, *, task: Task | None = None
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: make ``fn(**options) -> Dataset`` loadable by ``name``.

    Args:
        name: the name specs use (``dataset.name``).
        task: the task when it is fixed, so specs can check their metrics before loading.
    """

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        existing = _LOADERS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"dataset name {name!r} is already registered")
        _LOADERS[name] = _Loader(fn, task)
        return fn

    return deco


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def _loader(name: str) -> _Loader:
    try:
        return _LOADERS[name]
    except KeyError:
        raise ValidationError(
            f"unknown dataset {name!r}; allowed: {', '.join(dataset_names())}",
            field="dataset.name",
        ) from None


def dataset_task(name: str) -> Task | None:
    """The dataset's task when known without loading it, else None."""
    return _loader(name).task


def dataset_options(name: str) -> tuple[list[str], list[str]]:
    """(required, optional) option names of the loader ``name``."""
    sig = inspect.signature(_loader(name).fn)
    required = [p.name for p in sig.parameters.values() if p.default is inspect.Parameter.empty]
    optional = [p.name for p in sig.parameters.values() if p.default is not inspect.Parameter.empty]
    return required, optional


def load_dataset(name: str, **options: Any) -> Dataset:
    """Load the dataset registered as ``name`` with its loader's ``options``."""
    loader = _loader(name)
    required, optional = dataset_options(name)
    unknown = sorted(set(options) - set(required) - set(optional))
    if unknown:
        raise ValidationError(
            f"dataset {name!r} has no option(s) {unknown}; allowed: "
            f"{', '.join(required + optional) or 'none'}",
            field=f"dataset.{unknown[0]}",
        )
    missing = [k for k in required if k not in options]
    if missing:
        raise ValidationError(
            f"dataset {name!r} needs option(s) {missing}", field=f"dataset.{missing[0]}"
        )
    return loader.fn(**options)


def _sklearn(name: str, task: Task) -> Dataset:
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float32)
    if task == "classification":
        y = np.asarray(bunch.target, dtype=np.int64)
        classes = tuple(str(c) for c in getattr(bunch, "target_names", np.unique(y)))
    else:
        y = np.asarray(bunch.target, dtype=np.float64)
        classes = ()
    names = tuple(
        str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])])
    )
    return Dataset(name=name, X=X, y=y, task=task, feature_names=names, classes=classes)


@register_dataset("breast_cancer", task="classification")
def _breast_cancer() -> Dataset:
    return _sklearn("breast_cancer", "classification")


@register_dataset("digits", task="classification")
def _digits() -> Dataset:
    return _sklearn("digits", "classification")


@register_dataset("wine", task="classification")
def _wine() -> Dataset:
    return _sklearn("wine", "classification")


@register_dataset("diabetes", task="regression")
def _diabetes() -> Dataset:
    return _sklearn("diabetes", "regression")


def from_frame(
    frame: Any,
    *,
    target: str,
    name: str,
    task: Task | None = None,
    features: list[str] | None = None,
) -> Dataset:
    """A Dataset from a pandas DataFrame: numeric and boolean features, categoricals one-hot.

    Args:
        target: the column to predict.
        task: "classification" or "regression"; None -> classification when the target is
            non-numeric or has few distinct integer values.
        features: columns to use; None -> every column but the target.
    """
    import pandas as pd

    if target not in frame.columns:
        raise ValidationError(
            f"target column {target!r} is not in {name!r}; columns: {list(frame.columns)}",
            field="dataset.target",
        )
    cols = features if features is not None else [c for c in frame.columns if c != target]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValidationError(
            f"feature column(s) {missing} are not in {name!r}", field="dataset.features"
        )
    frame = frame.dropna(subset=[target])
    X = pd.get_dummies(frame[cols], dtype=np.float32)
    y_raw = frame[target]
    if task is None:
        numeric = pd.api.types.is_numeric_dtype(y_raw) and not pd.api.types.is_bool_dtype(y_raw)
        few_ints = numeric and bool(
            (y_raw == y_raw.round()).all() and y_raw.nunique() <= _MAX_INFERRED_CLASSES
        )
        task = "classification" if (not numeric or few_ints) else "regression"
    if task == "classification":
        codes, classes = pd.factorize(y_raw, sort=True)
        y = codes.astype(np.int64)
        labels = tuple(c.item() if hasattr(c, "item") else c for c in classes)
    elif task == "regression":
        y = y_raw.to_numpy(dtype=np.float64)
        labels = ()
    else:
        raise ValidationError(
            f"task must be 'classification' or 'regression', got {task!r}", field="dataset.task"
        )
    return Dataset(
        name=name,
        X=X.to_numpy(dtype=np.float32),
        y=y,
        task=task,
        feature_names=tuple(str(c) for c in X.columns),
        target=target,
        classes=labels,
    )


def _path(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValidationError(f"data file {str(p)!r} does not exist", field="dataset.path")
    return p


@register_dataset("csv")
def _csv(
    path: str, target: str, task: Task | None = None, features: list[str] | None = None
) -> Dataset:
    import pandas as pd

    p = _path(path)
    return from_frame(pd.read_csv(p), target=target, name=p.stem, task=task, features=features)


@register_dataset("parquet")
def _parquet(
    path: str, target: str, task: Task | None = None, features: list[str] | None = None
) -> Dataset:
    import pandas as pd

    p = _path(path)
    try:
        frame = pd.read_parquet(p)
    except ImportError as e:  # pandas needs pyarrow (or fastparquet) for Parquet
        raise ValidationError(
            f"reading {str(p)!r} needs pyarrow: pip install pyarrow ({e})", field="dataset.path"
        ) from None
    return from_frame(frame, target=target, name=p.stem, task=task, features=features)
