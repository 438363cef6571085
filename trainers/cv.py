"""k-fold cross-validation around any trainer.

The train and validation splits are pooled and cut into ``folds`` (stratified for
classification); the trainer fits each fold, and the reporter sees the running mean of the metric
after each fold (step = fold index), so a stopper can end a weak configuration after a fold or
two. The test split is never part of the pool. The returned metrics are the means over the folds
that ran; the artifact is a final fit on the original train/validation split (``refit=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainers._base import (
    NullReporter,
    Reporter,
    TrainData,
    Trainer,
    TrainResult,
    report_all,
    resolve_metric,
)

__all__ = ["cross_validate"]


def cross_validate(
    trainer: Trainer,
    params: Mapping[str, Any],
    data: TrainData,
    *,
    folds: int = 5,
    reporter: Reporter | None = None,
    metric: str | None = None,
    seed: int = 0,
    refit: bool = True,
) -> TrainResult:
    """Cross-validate ``trainer`` on ``params``.

    Args:
        folds: number of folds (>= 2).
        reporter: receives the running mean of ``metric`` after each fold.
        refit: also fit on the original split to return a model artifact.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    metric = resolve_metric(trainer, data.task, metric)
    reporter = report_all(reporter)
    X = np.concatenate([data.X_train, data.X_valid])  # (n_train + n_valid, n_features)
    y = np.concatenate([data.y_train, data.y_valid])
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if data.task == "classification"
        else KFold(folds, shuffle=True, random_state=seed)
    )
    per_fold: list[dict[str, float]] = []
    stopped = False
    for k, (tr, va) in enumerate(splitter.split(X, y)):
        fold = TrainData(
            X_train=X[tr],
            y_train=y[tr],
            X_valid=X[va],
            y_valid=y[va],
            task=data.task,
            feature_names=data.feature_names,
            n_classes=data.n_classes,
            name=data.name,
        )
        res = trainer.fit(params, fold, reporter=NullReporter(), metric=metric, seed=seed + k)
        per_fold.append(res.metrics)
        running = float(np.mean([m[metric] for m in per_fold]))
        if reporter.report(k, running) and k < folds - 1:
            stopped = True
            break
    metrics = {m: float(np.nanmean([f[m] for f in per_fold])) for m in per_fold[0]}
    artifact = None
    if refit and not stopped:
        artifact = trainer.fit(params, data, metric=metric, seed=seed).artifact
    return TrainResult(
        metrics=metrics,
        artifact=artifact,
        steps=len(per_fold),
        stopped=stopped,
        info={"folds": folds, "per_fold": [f[metric] for f in per_fold]},
    )
