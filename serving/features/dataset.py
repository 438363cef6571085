"""Training sets as datasets of a study spec (``dataset: {name: training_set, ...}``).

Importing this module registers the loader with :func:`trainers.datasets.register_dataset` under
``training_set`` (and ``feature_store``)::

    dataset:
      name: training_set
      training_set: churn          # the training set's name
      version: 3                   # optional; default latest (the spec then records it)
      db: postgresql://...         # optional; default AUTOTUNE_DB

The dataset's name is ``<training set>@<version>``, which the runner records in the study and
the registry in the model's lineage (``feature_set``, ``feature_set_version``).
"""

from __future__ import annotations

from typing import Any

from trainers.datasets import Dataset, from_frame, register_dataset

__all__ = ["load_training_set"]


def load_training_set(
    training_set: str,
    version: int | None = None,
    db: str | None = None,
    target: str | None = None,
    task: Any = None,
) -> Dataset:
    """Materialize a stored training set as a :class:`Dataset`.

    Args:
        training_set: its name.
        version: its version (default: the latest).
        db: the database URL (default: ``AUTOTUNE_DB``).
        target: the column to predict (default: the training set's ``label``).
        task: "classification" or "regression" (default: inferred from the target).
    """
    from autotune.errors import ValidationError
    from serving.features.store import FeatureStoreService

    store = FeatureStoreService(db)
    try:
        ts = store.get_training_set(training_set, version)
        frame = store.training_set_frame(training_set, ts.version)
    finally:
        store.close()
    target = target or ts.label
    if not target:
        raise ValidationError(
            f"training set {training_set!r} has no label column: give dataset.target",
            field="dataset.target",
        )
    return from_frame(
        frame, target=target, name=f"{ts.name}@{ts.version}", task=task, features=ts.columns
    )


register_dataset("training_set")(load_training_set)
register_dataset("feature_store")(load_training_set)
