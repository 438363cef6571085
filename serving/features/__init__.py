"""The feature store: one definition of features for training (offline, point-in-time) and
serving (online, by entity key).

- ``definitions``: feature groups (pydantic) and what makes a change breaking (a new version).
- ``validation``: checking an ingested batch, row by row, vectorized.
- ``pit``: the point-in-time join on arrays (numpy only).
- ``store``: :class:`FeatureStoreService` over SQLite/PostgreSQL (+ ``online``: Redis);
  ``writers``: its bulk upserts (executemany, binary COPY).
- ``api``: the REST routers; ``client``: :class:`FeatureStore`; ``cli``: the ``features`` group.
- ``resolver``: entity keys -> feature rows for the model server.
- ``dataset``: training sets as study datasets (imported on demand: it imports ``trainers``).

Importing ``serving.features`` is light: no web framework, no Redis.
"""

from serving.features.client import FeatureStore
from serving.features.definitions import EntityKey, FeatureGroup, FeatureGroupSpec, FeatureSpec
from serving.features.errors import (
    FeatureGroupNotFoundError,
    FeatureSchemaError,
    IngestionRejectedError,
    OnlineStoreUnavailableError,
    TrainingSetNotFoundError,
)
from serving.features.resolver import FeatureStoreResolver, resolve_features
from serving.features.schemas import (
    ApplyResult,
    IngestResult,
    OnlineRow,
    TrainingSet,
    TrainingSetSpec,
)
from serving.features.store import FeatureStoreService

__all__ = [
    "ApplyResult",
    "EntityKey",
    "FeatureGroup",
    "FeatureGroupNotFoundError",
    "FeatureGroupSpec",
    "FeatureSchemaError",
    "FeatureSpec",
    "FeatureStore",
    "FeatureStoreResolver",
    "FeatureStoreService",
    "IngestResult",
    "IngestionRejectedError",
    "OnlineRow",
    "OnlineStoreUnavailableError",
    "TrainingSet",
    "TrainingSetNotFoundError",
    "TrainingSetSpec",
    "resolve_features",
]
