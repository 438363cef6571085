"""Feature store catalog: feature group definitions and training sets.

Each group version's typed data tables (``feature_data_<id>``, ``feature_online_<id>``) are
created with the version by the feature store itself, since their columns are the group's.

Owned by ``serving/features/tables.py`` (whose Table definitions must stay equal to these).

Revision ID: 0003_features
Revises: 0002_registry
Create Date: 2026-11-26

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_features"
down_revision: str | Sequence[str] | None = "0002_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained types, as in 0001.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON(none_as_null=True)


def UTCDateTime() -> sa.DateTime:  # noqa: N802 - reads like the type it stands for
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feature_groups",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_feature_groups_name_version"),
    )
    op.create_table(
        "feature_training_sets",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("labels", sa.LargeBinary(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_feature_training_sets_name_version"),
    )


def downgrade() -> None:
    # The per-version data tables go with the catalog that names them.
    ids = [r[0] for r in op.get_bind().execute(sa.text("SELECT id FROM feature_groups"))]
    for gid in ids:
        op.execute(f"DROP TABLE IF EXISTS feature_data_{int(gid)}")
        op.execute(f"DROP TABLE IF EXISTS feature_online_{int(gid)}")
    op.drop_table("feature_training_sets")
    op.drop_table("feature_groups")
