"""Features for the model server: entity keys in, feature rows out, from the online store.

A model trained on a training set records it in its lineage (``feature_set`` = the training
set's name, ``feature_set_version`` = its version; or ``feature_refs`` = a list of pinned
references). The server then accepts ``{"entities": [{"customer_id": 42}]}`` and calls
:meth:`FeatureStoreResolver.resolve`, which reads the same features by the same definitions
(group versions pinned when the training set was made) from the online store, under the same
column names as the training set's. Missing or expired values come back as ``None``; the model's
signature check then decides (a non-nullable feature is an invalid input, naming the feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotune.errors import ValidationError
from autotune.projects import current_project
from serving.features.store import FeatureStoreService

__all__ = ["resolve_features", "FeatureStoreResolver", "feature_refs_of"]


def resolve_features(
    entities: Sequence[dict[str, Any]],
    feature_refs: Sequence[str] | str,
    *,
    store: FeatureStoreService,
) -> list[dict[str, Any]]:
    """One ``{column: value}`` row per entity, in order, from the online store.

    Args:
        entities: ``[{key column: value}, ...]`` (keys of every referenced group).
        feature_refs: references such as ``["customers@1:spend", "customers@1:tier"]``.
        store: the feature store to read.
    """
    return store.online_features(entities, feature_refs)


def feature_refs_of(lineage: Any, store: FeatureStoreService) -> list[str]:
    """The pinned feature references a model version's lineage names."""
    data = lineage.model_dump() if hasattr(lineage, "model_dump") else dict(lineage or {})
    refs = data.get("feature_refs")
    if refs:
        return store.pinned_refs(refs)
    name = data.get("feature_set")
    if name:
        version = data.get("feature_set_version")
        return store.get_training_set(name, int(version) if version else None).features
    raise ValidationError(
        "this model was not registered with a feature set: register it with lineage "
        "feature_set=<training set> (and feature_set_version) or feature_refs=[...]",
        field="entities",
    )


class FeatureStoreResolver:
    """The model server's :class:`serving.runtime.FeatureResolver` over a feature store.

    Args:
        store: the feature store (on the registry's database, or another).
    """

    def __init__(self, store: FeatureStoreService) -> None:
        self.store = store
        self._refs: dict[tuple[str, str, int], list[str]] = {}

    def resolve(self, version: Any, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows for ``entities`` with the features of model ``version``'s feature set."""
        # Model names are unique per project only: the request's project is part of the key.
        key = (current_project.get(), version.name, version.version)
        refs = self._refs.get(key)
        if refs is None:  # versions are immutable: their references never change
            refs = self._refs[key] = feature_refs_of(version.lineage, self.store)
        rows = resolve_features(entities, refs, store=self.store)
        names = version.signature.names
        # The model's signature decides the columns; entity-key inputs come from the request.
        return [
            {n: row.get(n, ent.get(n)) for n in names}
            for row, ent in zip(rows, entities, strict=True)
        ]
