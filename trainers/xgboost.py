"""XGBoost trainer: classification and regression, one report per boosting round.

The validation metric of every round goes to the reporter from an ``xgboost.callback
.TrainingCallback``, which also ends training when the reporter says stop (a stopper pruning the
trial). Early stopping on the same metric is XGBoost's own ``EarlyStopping`` callback. The model
is saved in XGBoost's UBJSON format (``Booster.save_raw("ubj")``), which loads without pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

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

__all__ = ["XGBoostTrainer", "XGBoostOptions"]


class XGBoostOptions(TrainerOptions):
    num_boost_round: int = Field(default=200, ge=1, le=100_000)
    early_stopping_rounds: int | None = Field(default=20, ge=1)
    report_every: int = Field(
        default=1, ge=1, description="Report every k-th round (fewer service calls)."
    )


def _xgb_metric(metric: str, n_classes: int) -> str:
    """Our metric name -> the XGBoost eval_metric computed each round."""
    multi = n_classes > 2
    return {
        "log_loss": "mlogloss" if multi else "logloss",
        "accuracy": "merror" if multi else "error",
        "error": "merror" if multi else "error",
        "auc": "auc",
        "rmse": "rmse",
        "mae": "mae",
        "r2": "rmse",
    }[metric]


def _from_xgb(metric: str, value: float, y_var: float) -> float:
    """Turn the per-round XGBoost value into our metric (accuracy = 1 - error, R² from RMSE)."""
    if metric == "accuracy":
        return 1.0 - value
    if metric == "r2":
        return 1.0 - value**2 / y_var if y_var > 0 else 0.0
    return value


def _report_callback(
    reporter: Reporter,
    metric: str,
    xgb_metric: str,
    y_var: float,
    every: int,
    early_stopping: Any | None,
) -> Any:
    import xgboost as xgb

    class _Report(xgb.callback.TrainingCallback):
        """Reports the validation metric of each round; stops when told to or on early stopping.

        It drives XGBoost's ``EarlyStopping`` itself because XGBoost's callback container stops
        asking callbacks as soon as one says stop, and every round must be reported.
        """

        def __init__(self) -> None:
            super().__init__()
            self.stopped = False
            self.rounds = 0

        def before_training(self, model: Any) -> Any:
            return early_stopping.before_training(model) if early_stopping else model

        def after_training(self, model: Any) -> Any:
            return early_stopping.after_training(model) if early_stopping else model

        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            self.rounds = epoch + 1
            done = bool(early_stopping and early_stopping.after_iteration(model, epoch, evals_log))
            if (epoch + 1) % every == 0 or done:
                value = _from_xgb(metric, float(evals_log["valid"][xgb_metric][-1]), y_var)
                if reporter.report(epoch, value):
                    self.stopped = True
            return done or self.stopped

    return _Report()


@register_trainer
class XGBoostTrainer(Trainer):
    """Gradient-boosted trees with ``xgboost.train``.

    Every trial parameter goes to ``xgboost.train``'s params (``eta``, ``max_depth``,
    ``subsample``, ...), except ``num_boost_round`` and ``early_stopping_rounds``, which may also
    be tuned and then override the options. The objective and eval metric follow from the task.
    """

    name: ClassVar[str] = "xgboost"
    Options: ClassVar[type[TrainerOptions]] = XGBoostOptions

    def prepare(self) -> None:
        import xgboost  # noqa: F401

    def refit_params(self, params: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        """No early stopping in a refit (its evaluation split is the test split): train the
        number of rounds the trial kept."""
        out = dict(params)
        if info.get("best_iteration") is not None:
            out["num_boost_round"] = int(info["best_iteration"]) + 1
        out["early_stopping_rounds"] = None
        return out

    def fit(
        self,
        params: Mapping[str, Any],
        data: TrainData,
        *,
        reporter: Reporter | None = None,
        metric: str | None = None,
        seed: int = 0,
    ) -> TrainResult:
        import xgboost as xgb

        opts: XGBoostOptions = self.options  # type: ignore[assignment]
        metric = resolve_metric(self, data.task, metric)
        params = dict(params)
        rounds = int(params.pop("num_boost_round", opts.num_boost_round))
        es_rounds = params.pop("early_stopping_rounds", opts.early_stopping_rounds)
        xgb_metric = _xgb_metric(metric, data.n_classes)
        booster_params: dict[str, Any] = {"seed": seed, "verbosity": 0}
        if data.task == "classification":
            if data.n_classes > 2:
                booster_params.update(objective="multi:softprob", num_class=data.n_classes)
            else:
                booster_params["objective"] = "binary:logistic"
        else:
            booster_params["objective"] = "reg:squarederror"
        booster_params.update(params)
        booster_params["eval_metric"] = xgb_metric

        dtrain = xgb.DMatrix(data.X_train, label=data.y_train)
        dvalid = xgb.DMatrix(data.X_valid, label=data.y_valid)
        y_var = float(np.var(data.y_valid)) if data.task == "regression" else 0.0
        early_stopping = None
        if es_rounds:
            early_stopping = xgb.callback.EarlyStopping(
                rounds=int(es_rounds),
                metric_name=xgb_metric,
                data_name="valid",
                maximize=xgb_metric == "auc",  # accuracy and R² are watched as error and RMSE
                save_best=True,
            )
        report = _report_callback(
            report_all(reporter), metric, xgb_metric, y_var, opts.report_every, early_stopping
        )
        booster = xgb.train(
            booster_params,
            dtrain,
            num_boost_round=rounds,
            evals=[(dvalid, "valid")],
            callbacks=[report],
            verbose_eval=False,
        )
        # With early stopping the booster was cut back to its best round (save_best=True).
        kept = booster.num_boosted_rounds()
        pred = booster.predict(dvalid)
        if data.task == "classification" and pred.ndim == 1:
            pred = np.column_stack([1.0 - pred, pred])
        return TrainResult(
            metrics=evaluate(data.task, data.y_valid, pred),
            artifact=Artifact(
                data=bytes(booster.save_raw("ubj")), filename="model.ubj", format="xgboost-ubj"
            ),
            steps=report.rounds,
            stopped=report.stopped,
            info={"best_iteration": kept - 1, "rounds_trained": report.rounds},
        )
