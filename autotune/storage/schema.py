"""The tables of the tuning core, as SQLAlchemy 2.x declarative models.

The schema itself is created and changed only by the Alembic migrations in
``autotune/storage/migrations/versions`` (one chain for every package); these models are what the
service queries with and what ``alembic revision --autogenerate`` compares against. A later
feature adds its tables by subclassing ``Base`` here or in its own module (imported by the
migrations' ``env.py``) and adding a migration to the same chain.

Times are stored in UTC: ``timestamptz`` on PostgreSQL, naive UTC text on SQLite (whose text
form sorts by time, so ``heartbeat_at < cutoff`` works in SQL on both).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "StudyRow",
    "TrialRow",
    "IntermediateValueRow",
    "QueueRow",
    "UTCDateTime",
    "BigIntPK",
    "JSONType",
    "MAX_CLIENT_ID",
    "ProjectRow",
    "ApiKeyRow",
    "PROJECT_LENGTH",
]

MAX_CLIENT_ID = 256
PROJECT_LENGTH = 64
# SQLite keeps INTEGER PRIMARY KEY as the rowid only when the type is exactly INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON(none_as_null=True)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime}


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The tenant; names are unique within a project (rows from before projects: "default").
    project: Mapped[str] = mapped_column(String(PROJECT_LENGTH), server_default="default")
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    # The spec, one column per field so that rows stay readable in SQL.
    space: Mapped[dict[str, Any]] = mapped_column(JSONType)
    objectives: Mapped[dict[str, Any]] = mapped_column(JSONType)
    constraints: Mapped[dict[str, Any]] = mapped_column(JSONType)
    max_trials: Mapped[int | None] = mapped_column(BigInteger)
    algorithm: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    heartbeat_grace_s: Mapped[float | None] = mapped_column(Float)
    stopper: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    # Number of trials ever created; the next trial's number.
    n_trials: Mapped[int] = mapped_column(BigInteger, default=0)
    designer_info: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("project", "name", name="uq_studies_project_name"),
        Index("ix_studies_state_id", "state", "id"),
    )


class TrialRow(Base):
    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("studies.id", ondelete="CASCADE", name="fk_trials_study")
    )
    number: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    values: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    client_id: Mapped[str | None] = mapped_column(String(MAX_CLIENT_ID))
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    # Set by the first report, so that reading a trial skips the intermediate-values query
    # for the (many) trials that never reported one.
    has_intermediate: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
        # Counts by state, running trials by heartbeat (expiry).
        Index("ix_trials_study_state_heartbeat", "study_id", "state", "heartbeat_at"),
        Index("ix_trials_study_client", "study_id", "client_id"),
    )


class IntermediateValueRow(Base):
    __tablename__ = "intermediate_values"

    trial_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("trials.id", ondelete="CASCADE", name="fk_intermediate_values_trial"),
        primary_key=True,
    )
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class QueueRow(Base):
    """Configurations waiting to be handed out before the designer is asked."""

    __tablename__ = "queue"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("studies.id", ondelete="CASCADE", name="fk_queue_study")
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Higher first; requeued configurations of abandoned trials jump ahead of user ones.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # The abandoned trial this configuration came from: a late result for it removes the entry.
    source_trial_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("trials.id", ondelete="CASCADE", name="fk_queue_source_trial")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_queue_study_priority_id", "study_id", "priority", "id"),
        Index("ix_queue_source_trial", "source_trial_id"),
    )


class ProjectRow(Base):
    """A tenant. ``default`` always exists (the migration creates it)."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(PROJECT_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKeyRow(Base):
    """An API key of a project: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_keys"

    # Public id (shown by ``keys list``, used by ``keys revoke``); not secret.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(
        String(PROJECT_LENGTH),
        ForeignKey("projects.name", ondelete="CASCADE", name="fk_api_keys_project"),
    )
    scope: Mapped[str] = mapped_column(String(8))
    name: Mapped[str | None] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        Index("ix_api_keys_project", "project"),
    )
