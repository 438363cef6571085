"""The feature store's tables (all prefixed ``feature_``), in the studies' database.

Two catalog tables come from the one Alembic chain
(``autotune/storage/migrations/versions/0003_features.py``; these Table objects must stay equal
to it):

- ``feature_groups``: one row per (project, name, version): the definition as JSON.
- ``feature_training_sets``: named, versioned training-set definitions with their label table.

Each group version's data lives in two typed tables created with it (the way Feast's SQL offline
stores keep one table per feature view), so that a batch is bulk-loaded as native values (COPY on
PostgreSQL, ``executemany`` on SQLite) and read back as columns, with no per-row encoding:

- ``feature_data_<id>`` (offline store): the full history, primary key (entity keys...,
  ``_event_time``); re-ingesting an entity at the same event time replaces the row.
- ``feature_online_<id>`` (SQL online store): the latest row per entity, primary key (entity
  keys...); an older event never overwrites a newer one.

``_event_time`` and ``_ingested_at`` are int64 microseconds since the Unix epoch (UTC): sortable,
compact and the same on both databases, so point-in-time and TTL checks are integer arithmetic.
Column names starting with ``_`` are reserved for these (feature names cannot start with one).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

from autotune.projects import DEFAULT_PROJECT
from autotune.storage.schema import PROJECT_LENGTH, BigIntPK, JSONType, UTCDateTime
from serving.features.definitions import FeatureGroup

__all__ = [
    "metadata",
    "feature_groups",
    "feature_training_sets",
    "data_tables",
    "EVENT_TIME",
    "INGESTED_AT",
    "DATA_TABLE_PREFIX",
    "ONLINE_TABLE_PREFIX",
    "MAX_STRING_KEY",
]

EVENT_TIME = "_event_time"
INGESTED_AT = "_ingested_at"
DATA_TABLE_PREFIX = "feature_data_"
ONLINE_TABLE_PREFIX = "feature_online_"
MAX_STRING_KEY = 512
metadata = MetaData()

feature_groups = Table(
    "feature_groups",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("project", String(PROJECT_LENGTH), nullable=False, server_default=DEFAULT_PROJECT),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint(
        "project", "name", "version", name="uq_feature_groups_project_name_version"
    ),
)
feature_training_sets = Table(
    "feature_training_sets",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("project", String(PROJECT_LENGTH), nullable=False, server_default=DEFAULT_PROJECT),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSONType, nullable=False),
    Column("labels", LargeBinary, nullable=False),
    Column("n_rows", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint(
        "project", "name", "version", name="uq_feature_training_sets_project_name_version"
    ),
)

_SQL_TYPES: dict[str, TypeEngine] = {
    "float": Float(precision=53),
    "int": BigInteger(),
    "bool": Boolean(create_constraint=False),
    "string": Text(),
}


def data_tables(group: FeatureGroup, group_id: int) -> tuple[Table, Table]:
    """The (offline, online) Table objects of one group version, in a throwaway MetaData."""
    md = MetaData()

    def keys() -> list[Column]:
        return [
            Column(e.name, BigInteger() if e.dtype == "int" else String(MAX_STRING_KEY),
                   primary_key=True, autoincrement=False)
            for e in group.entities
        ]  # fmt: skip

    def features() -> list[Column]:
        return [Column(f.name, _SQL_TYPES[f.dtype], nullable=True) for f in group.features]

    offline = Table(
        f"{DATA_TABLE_PREFIX}{group_id}",
        md,
        *keys(),
        Column(EVENT_TIME, BigInteger, primary_key=True, autoincrement=False),
        *features(),
        Column(INGESTED_AT, BigInteger, nullable=False),
        sqlite_with_rowid=False,  # the primary key is the table: one B-tree, not two
    )
    online = Table(
        f"{ONLINE_TABLE_PREFIX}{group_id}",
        md,
        *keys(),
        Column(EVENT_TIME, BigInteger, nullable=False),
        *features(),
        Column(INGESTED_AT, BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    return offline, online
