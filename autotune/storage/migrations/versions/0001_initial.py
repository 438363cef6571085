"""Tuning core: studies, trials, intermediate values and the queue of configurations.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained types (a migration must not change when the models do). SQLite keeps
# INTEGER PRIMARY KEY as the rowid only when the type is exactly INTEGER.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON(none_as_null=True)


def UTCDateTime() -> sa.DateTime:  # noqa: N802 - reads like the type it stands for
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("space", JSONType, nullable=False),
        sa.Column("objectives", JSONType, nullable=False),
        sa.Column("constraints", JSONType, nullable=False),
        sa.Column("max_trials", sa.BigInteger(), nullable=True),
        sa.Column("algorithm", sa.String(64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_grace_s", sa.Float(), nullable=True),
        sa.Column("stopper", JSONType, nullable=True),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("n_trials", sa.BigInteger(), nullable=False),
        sa.Column("designer_info", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_studies_name"),
    )
    op.create_index("ix_studies_state_id", "studies", ["state", "id"])

    op.create_table(
        "trials",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.BigInteger(),
            sa.ForeignKey("studies.id", ondelete="CASCADE", name="fk_trials_study"),
            nullable=False,
        ),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("values", JSONType, nullable=True),
        sa.Column("client_id", sa.String(256), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("has_intermediate", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
    )
    op.create_index(
        "ix_trials_study_state_heartbeat", "trials", ["study_id", "state", "heartbeat_at"]
    )
    op.create_index("ix_trials_study_client", "trials", ["study_id", "client_id"])

    op.create_table(
        "intermediate_values",
        sa.Column(
            "trial_id",
            sa.BigInteger(),
            sa.ForeignKey("trials.id", ondelete="CASCADE", name="fk_intermediate_values_trial"),
            primary_key=True,
        ),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )

    op.create_table(
        "queue",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.BigInteger(),
            sa.ForeignKey("studies.id", ondelete="CASCADE", name="fk_queue_study"),
            nullable=False,
        ),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "source_trial_id",
            sa.BigInteger(),
            sa.ForeignKey("trials.id", ondelete="CASCADE", name="fk_queue_source_trial"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_queue_study_priority_id", "queue", ["study_id", "priority", "id"])
    op.create_index("ix_queue_source_trial", "queue", ["source_trial_id"])


def downgrade() -> None:
    op.drop_table("queue")
    op.drop_table("intermediate_values")
    op.drop_table("trials")
    op.drop_table("studies")
