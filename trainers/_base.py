"""The trainer interface: parameters and data in; metrics, intermediate values and a model out.

A trainer fits one model for one configuration::

    result = trainer.fit(params, data, reporter=reporter, metric="log_loss", seed=7)

It reports the validation ``metric`` after every step (boosting round, epoch, stage) through the
``reporter``, whose ``report(step, value)`` returns whether to stop; a trainer that is told to stop
returns at once with ``stopped=True`` and the model as it is. The result holds the validation
metrics and the model artifact in a safe format (XGBoost UBJSON, a PyTorch state_dict), never an
arbitrary pickle where the library has a format of its own.

Trainers know nothing of studies, Dask or the service: the runner adapts them, so the same trainer
runs in a test, a benchmark and on a cluster (like the designers in ``autotune.designers``).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from autotune.errors import ValidationError

__all__ = [
    "Task",
    "TrainData",
    "Artifact",
    "TrainResult",
    "Reporter",
    "NullReporter",
    "RecordingReporter",
    "Trainer",
    "TrainerOptions",
    "METRICS",
    "metric_direction",
    "metrics_for_task",
    "evaluate",
    "register_trainer",
    "make_trainer",
    "trainer_class",
    "trainer_names",
    "pydantic_error",
]

Task = Literal["classification", "regression"]

# metric -> (task, direction). The first metric of a task is its default objective.
METRICS: dict[str, tuple[Task, Literal["minimize", "maximize"]]] = {
    "log_loss": ("classification", "minimize"),
    "accuracy": ("classification", "maximize"),
    "error": ("classification", "minimize"),
    "auc": ("classification", "maximize"),
    "rmse": ("regression", "minimize"),
    "mae": ("regression", "minimize"),
    "r2": ("regression", "maximize"),
}
# Clip probabilities before the log so a confident wrong answer costs a large, finite loss.
_PROBA_EPS = 1e-15


def metrics_for_task(task: str) -> tuple[str, ...]:
    """The metric names a trainer of ``task`` computes (the first is the default objective)."""
    return tuple(m for m, (t, _) in METRICS.items() if t == task)


def metric_direction(metric: str) -> Literal["minimize", "maximize"]:
    return METRICS[metric][1]


@dataclass(frozen=True)
class TrainData:
    """What a trainer sees during tuning: the train and validation splits, never the test split.

    Arrays: ``X_*`` is ``(n_rows, n_features)`` float32, ``y_*`` is ``(n_rows,)`` (class codes
    0..n_classes-1 for classification, floats for regression).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    task: Task
    feature_names: tuple[str, ...] = ()
    n_classes: int = 0  # 0 for regression
    name: str = ""

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


@dataclass(frozen=True)
class Artifact:
    """A trained model in its own safe format, with the file name it should be stored under."""

    data: bytes = field(repr=False)
    filename: str
    format: str  # "xgboost-ubj", "torch-state-dict", "sklearn-skops" (serving.artifacts.FORMATS)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class TrainResult:
    """The outcome of one fit.

    Attributes:
        metrics: validation metrics of the returned model (``metrics_for_task`` names).
        artifact: the model, or None when the trainer produced none.
        steps: how many steps (rounds, epochs, stages, folds) ran.
        stopped: True when the reporter asked to stop before the trainer finished.
        info: trainer-specific details (best iteration, ...), JSON-able.
    """

    metrics: dict[str, float]
    artifact: Artifact | None = None
    steps: int = 0
    stopped: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reporter(Protocol):
    """Receives intermediate values; ``report`` returns True when the trial should stop."""

    def report(self, step: int, value: float) -> bool: ...


class NullReporter:
    """Reports nowhere and never stops (a plain fit)."""

    def report(self, step: int, value: float) -> bool:
        return False


class RecordingReporter:
    """Keeps every report; asks to stop once ``stop_after`` values have been reported (tests)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.values: list[tuple[int, float]] = []
        self.stop_after = stop_after

    def report(self, step: int, value: float) -> bool:
        self.values.append((int(step), float(value)))
        return self.stop_after is not None and len(self.values) >= self.stop_after


def evaluate(task: str, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of ``task``.

    Args:
        task: "classification" or "regression".
        y_true: ``(n,)`` class codes or targets.
        pred: class probabilities ``(n, n_classes)`` for classification, values ``(n,)`` for
            regression.
    """
    y_true = np.asarray(y_true)
    pred = np.asarray(pred, dtype=np.float64)
    if task == "classification":
        proba = np.clip(pred, _PROBA_EPS, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
        codes = y_true.astype(np.int64)
        accuracy = float(np.mean(proba.argmax(axis=1) == codes))
        out = {
            "log_loss": float(-np.mean(np.log(proba[np.arange(len(codes)), codes]))),
            "accuracy": accuracy,
            "error": 1.0 - accuracy,
        }
        out["auc"] = _auc(codes, proba)
        return out
    resid = y_true.astype(np.float64) - pred
    var = float(np.var(y_true))
    mse = float(np.mean(resid**2))
    return {
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(resid))),
        "r2": 1.0 - mse / var if var > 0 else 0.0,
    }


def _auc(codes: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    present = np.unique(codes)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(codes, proba[:, 1]))
    try:  # one-vs-rest macro AUC; undefined when the validation split lacks a class
        return float(roc_auc_score(codes, proba, multi_class="ovr", labels=range(proba.shape[1])))
    except ValueError:
        return float("nan")


class TrainerOptions(BaseModel):
    """Options of a trainer that are not tuned (the spec's ``trainer.options``). Subclass it."""

    model_config = ConfigDict(extra="forbid")


class Trainer(ABC):
    """Fits one model per configuration. Subclasses set ``name`` and implement ``fit``.

    ``Options`` is a pydantic model of the constructor's keyword options, so a study spec is
    validated before anything runs. Instances are pickled to Dask workers: keep them small and
    import heavy libraries inside ``fit``.
    """

    name: ClassVar[str]
    Options: ClassVar[type[TrainerOptions]] = TrainerOptions

    def __init__(self, **options: Any) -> None:
        try:
            self.options = self.Options.model_validate(options)
        except PydanticValidationError as e:
            raise pydantic_error(e, model=self.Options, prefix="trainer.options") from None

    def metrics(self, task: str) -> tuple[str, ...]:
        """Metric names this trainer computes for ``task`` (the objectives a spec may name)."""
        return metrics_for_task(task)

    def prepare(self) -> None:
        """Optional hook, run once per worker process before its first trial: import the heavy
        library (xgboost, torch) so that the first trial's time is its own."""
        return None

    def refit_params(self, params: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        """Optional hook: the parameters of a refit without a validation split (the final model,
        trained on train+validation and scored on the test split).

        Args:
            params: the trial's configuration.
            info: the trial's ``TrainResult.info``.

        A trainer that decides something on the validation split (XGBoost's early stopping)
        pins what it learned there, so that the test split never steers training. By default
        the parameters are unchanged.
        """
        return dict(params)

    @abstractmethod
    def fit(
        self,
        params: Mapping[str, Any],
        data: TrainData,
        *,
        reporter: Reporter | None = None,
        metric: str | None = None,
        seed: int = 0,
    ) -> TrainResult:
        """Fit one model.

        Args:
            params: the trial's configuration (passed through to the library).
            data: train and validation splits.
            reporter: receives ``metric`` on the validation split after every step.
            metric: the metric to report; None -> the task's default.
            seed: seeds the library's randomness.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options.model_dump()})"


def pydantic_error(
    e: PydanticValidationError, *, model: type[BaseModel] | None = None, prefix: str = ""
) -> ValidationError:
    """The first problem of a pydantic error as our ValidationError: key path, problem, allowed.

    Args:
        e: the pydantic error.
        model: the model validated, so an unknown key can list the keys that are allowed.
        prefix: key path of the model inside the document (``trainer.options``).
    """
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc) or prefix or "(root)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    allowed = None
    if err["type"] == "extra_forbidden" and model is not None:
        sub: Any = model
        for part in loc[:-1]:  # walk nested models to the one that refused the key
            field_info = getattr(sub, "model_fields", {}).get(part)
            sub = getattr(field_info, "annotation", None)
        fields = getattr(sub, "model_fields", None)
        if fields:
            allowed = ", ".join(f.alias or n for n, f in fields.items())
        msg = "unknown key"
    elif "expected" in ctx:
        allowed = str(ctx["expected"])
        msg = f"{err.get('input')!r} is not allowed"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        msg = f"{msg}, got {err['input']!r}"
    text = f"{key}: {msg}" + (f"; allowed: {allowed}" if allowed else "")
    return ValidationError(text, field=key, details={"key": key, "allowed": allowed})


_TRAINERS: dict[str, type[Trainer]] = {}


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make a trainer available by ``cls.name`` to specs and the runner."""
    name = cls.name
    existing = _TRAINERS.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"trainer name {name!r} is already taken by {existing.__qualname__}")
    _TRAINERS[name] = cls
    return cls


def trainer_names() -> list[str]:
    return sorted(_TRAINERS)


def trainer_class(name: str) -> type[Trainer]:
    try:
        return _TRAINERS[name]
    except KeyError:
        raise ValidationError(
            f"unknown trainer {name!r}; allowed: {', '.join(trainer_names())}",
            field="trainer.type",
        ) from None


def make_trainer(name: str, options: Mapping[str, Any] | None = None) -> Trainer:
    """Build the trainer registered as ``name`` with its validated ``options``."""
    return trainer_class(name)(**dict(options or {}))


def resolve_metric(trainer: Trainer, task: str, metric: str | None) -> str:
    allowed = trainer.metrics(task)
    if metric is None:
        return allowed[0]
    if metric not in allowed:
        raise ValidationError(
            f"metric {metric!r} is not computed by trainer {trainer.name!r} for {task}; "
            f"allowed: {', '.join(allowed)}",
            field="metric",
        )
    return metric


def report_all(reporter: Reporter | None) -> Reporter:
    return reporter if reporter is not None else NullReporter()
