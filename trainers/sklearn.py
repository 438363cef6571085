"""scikit-learn trainer: any estimator named by import path, trial parameters passed through.

``estimator: sklearn.ensemble.RandomForestClassifier`` in a spec imports that class, but only
from an allowlist of module prefixes (``ALLOWED_PREFIXES``): a spec is data and must not be able
to name an arbitrary callable (``os.system``) for a worker to run.

Ensembles that can grow (``warm_start`` and ``n_estimators``: random forests, extra trees,
gradient boosting) are grown in ``stages`` steps with a report after each, so stoppers can end a
weak trial early; other estimators report once, after the fit.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from autotune.errors import ValidationError
from trainers._base import (
    Artifact,
    Reporter,
    TrainData,
    Trainer,
    TrainerOptions,
    TrainResult,
    evaluate,
    register_trainer,
    report_all,
    resolve_metric,
)

__all__ = ["SklearnTrainer", "SklearnOptions", "ALLOWED_PREFIXES", "import_estimator"]

ALLOWED_PREFIXES: tuple[str, ...] = ("sklearn.",)


def import_estimator(path: str, *, allowed: tuple[str, ...] = ALLOWED_PREFIXES) -> type:
    """Import the estimator class at ``path`` ("package.module.Class") from an allowed prefix.

    Raises:
        ValidationError: the path is outside ``allowed``, does not import, or is not an
            estimator class (no ``fit``).
    """
    if not any(path.startswith(p) for p in allowed):
        raise ValidationError(
            f"estimator {path!r} is not allowed: import paths must start with one of "
            f"{', '.join(repr(p) for p in allowed)}",
            field="trainer.options.estimator",
        )
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValidationError(
            f"estimator {path!r} could not be imported ({type(e).__name__}: {e}); "
            "use the full path, e.g. sklearn.ensemble.RandomForestClassifier",
            field="trainer.options.estimator",
        ) from None
    if not (inspect.isclass(cls) and hasattr(cls, "fit")):
        raise ValidationError(
            f"{path!r} is not an estimator class (it has no fit method)",
            field="trainer.options.estimator",
        )
    return cls


class SklearnOptions(TrainerOptions):
    estimator: str = Field(description="Import path, e.g. sklearn.ensemble.RandomForestClassifier")
    stages: int = Field(default=5, ge=1, le=1000, description="Reports while growing ensembles.")

    @field_validator("estimator")
    @classmethod
    def _allowed(cls, v: str) -> str:
        import_estimator(v)
        return v


@register_trainer
class SklearnTrainer(Trainer):
    """Fits ``estimator(**params)``; ``random_state`` is set from the seed when it exists."""

    name: ClassVar[str] = "sklearn"
    Options: ClassVar[type[TrainerOptions]] = SklearnOptions

    def prepare(self) -> None:
        import_estimator(self.options.estimator)  # type: ignore[attr-defined]

    def fit(
        self,
        params: Mapping[str, Any],
        data: TrainData,
        *,
        reporter: Reporter | None = None,
        metric: str | None = None,
        seed: int = 0,
    ) -> TrainResult:
        opts: SklearnOptions = self.options  # type: ignore[assignment]
        metric = resolve_metric(self, data.task, metric)
        reporter = report_all(reporter)
        cls = import_estimator(opts.estimator)
        kwargs = dict(params)
        accepted = cls().get_params() if hasattr(cls, "get_params") else {}
        if "random_state" in accepted and "random_state" not in kwargs:
            kwargs["random_state"] = seed
        model = cls(**kwargs)

        growable = "warm_start" in accepted and "n_estimators" in accepted and opts.stages > 1
        stopped = False
        if growable:
            total = int(model.get_params()["n_estimators"])
            sizes = sorted(
                {max(1, math.ceil(total * i / opts.stages)) for i in range(1, opts.stages + 1)}
            )
            model.set_params(warm_start=True)
            steps = 0
            for steps, size in enumerate(sizes, start=1):  # noqa: B007 (steps is used after)
                model.set_params(n_estimators=size)
                model.fit(data.X_train, data.y_train)
                value = self._score(model, data)[metric]
                if reporter.report(size - 1, value) and size < total:
                    stopped = True
                    break
        else:
            model.fit(data.X_train, data.y_train)
            steps = 1
            reporter.report(0, self._score(model, data)[metric])
        metrics = self._score(model, data)
        # skops, not pickle: the registry refuses pickles, and the server loads skops files
        # with its own trusted-types list.
        import skops.io as sio

        artifact = Artifact(data=sio.dumps(model), filename="model.skops", format="sklearn-skops")
        return TrainResult(
            metrics=metrics,
            artifact=artifact,
            steps=steps,
            stopped=stopped,
            info={"estimator": opts.estimator},
        )

    @staticmethod
    def _score(model: Any, data: TrainData) -> dict[str, float]:
        if data.task == "classification":
            if hasattr(model, "predict_proba"):
                proba = np.zeros((len(data.y_valid), data.n_classes))
                # A class missing from the training split has no column: place by model.classes_.
                proba[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(
                    data.X_valid
                )
            else:  # hard predictions as one-hot probabilities
                proba = np.eye(data.n_classes)[np.asarray(model.predict(data.X_valid), dtype=int)]
            return evaluate("classification", data.y_valid, proba)
        return evaluate("regression", data.y_valid, model.predict(data.X_valid))
