"""Model registry: model names, immutable versions, aliases, alias history, promotion decisions.

Owned by ``serving/registry.py`` (whose Table definitions must stay equal to these).

Revision ID: 0002_registry
Revises: 0001
Create Date: 2026-11-26

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_registry"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained types, as in 0001.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON(none_as_null=True)


def UTCDateTime() -> sa.DateTime:  # noqa: N802 - reads like the type it stands for
    return sa.DateTime(timezone=True)


def _model_fk(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "model_id",
        BigIntPK,
        sa.ForeignKey("model_names.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "model_names",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _model_fk(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("artifact_format", sa.String(32), nullable=False),
        sa.Column("artifact_size", BigIntPK, nullable=False),
        sa.Column("signature", JSONType, nullable=False),
        sa.Column("output_schema", JSONType, nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("lineage", JSONType, nullable=False),
        sa.Column("input_example", JSONType, nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    op.create_table(
        "model_aliases",
        _model_fk(primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "model_alias_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _model_fk(),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_model_alias_events_model_alias", "model_alias_events", ["model_id", "alias", "id"]
    )
    op.create_table(
        "model_comparisons",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _model_fk(),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("candidate_version", sa.Integer(), nullable=False),
        sa.Column("incumbent_version", sa.Integer(), nullable=True),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("candidate_value", sa.Float(), nullable=False),
        sa.Column("incumbent_value", sa.Float(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_model_comparisons_model", "model_comparisons", ["model_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_model_comparisons_model", table_name="model_comparisons")
    op.drop_table("model_comparisons")
    op.drop_index("ix_model_alias_events_model_alias", table_name="model_alias_events")
    op.drop_table("model_alias_events")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
    op.drop_table("model_names")
