"""Projects (tenants) and API keys; a ``project`` column on studies, models and feature tables.

Every existing row lands in project ``default``; names become unique per project instead of
globally (studies, model names, feature groups and training sets).

PostgreSQL changes the tables in place. SQLite cannot drop a table's UNIQUE constraint, so the
tables are rebuilt; with foreign keys on (the engine's setting, which a transaction cannot turn
off) dropping a parent table would cascade into its children, so every table of the rebuild is
first renamed away (SQLite rewrites the children's references to follow), the new tables are
created and filled, and the old ones dropped children first, when nothing refers to them.

Revision ID: 0004_projects
Revises: 0003_features
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_projects"
down_revision: str | Sequence[str] | None = "0003_features"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Self-contained types, as in 0001.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON(none_as_null=True)
PROJECT = 64


def UTCDateTime() -> sa.DateTime:  # noqa: N802 - reads like the type it stands for
    return sa.DateTime(timezone=True)


def _project() -> sa.Column:
    return sa.Column("project", sa.String(PROJECT), nullable=False, server_default="default")


# (table, old unique constraint (None: unnamed in 0002), new constraint, its columns)
_RENAMED_UNIQUE = [
    ("studies", "uq_studies_name", "uq_studies_project_name", ["project", "name"]),
    ("model_names", None, "uq_model_names_project_name", ["project", "name"]),
    (
        "feature_groups",
        "uq_feature_groups_name_version",
        "uq_feature_groups_project_name_version",
        ["project", "name", "version"],
    ),
    (
        "feature_training_sets",
        "uq_feature_training_sets_name_version",
        "uq_feature_training_sets_project_name_version",
        ["project", "name", "version"],
    ),
]


def _auth_tables() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(PROJECT), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "project",
            sa.String(PROJECT),
            sa.ForeignKey("projects.name", ondelete="CASCADE", name="fk_api_keys_project"),
            nullable=False,
        ),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_project", "api_keys", ["project"])
    op.execute("INSERT INTO projects (name, created_at) VALUES ('default', CURRENT_TIMESTAMP)")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite(bind)
    else:
        insp = sa.inspect(bind)
        for table, old, new, cols in _RENAMED_UNIQUE:
            op.add_column(table, _project())
            if old is None:  # an inline UNIQUE: PostgreSQL named it
                old = next(
                    u["name"]
                    for u in insp.get_unique_constraints(table)
                    if u["column_names"] == ["name"]
                )
            op.drop_constraint(old, table, type_="unique")
            op.create_unique_constraint(new, table, cols)
    _auth_tables()


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_index("ix_api_keys_project", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("projects")
    if bind.dialect.name == "sqlite":
        raise NotImplementedError(
            "downgrading 0004 on SQLite is not supported: restore the file from a backup"
        )
    for table, old, new, cols in _RENAMED_UNIQUE:
        op.drop_constraint(new, table, type_="unique")
        op.create_unique_constraint(old or f"{table}_name_key", table, cols[1:])
        op.drop_column(table, "project")


# ------------------------------------------------------------------------- SQLite rebuild


def _new_tables(md: sa.MetaData) -> list[sa.Table]:
    """Every table that gains a project or refers to one that does, at this revision, parents
    first (0001-0003's definitions with the project column and the new unique constraints)."""
    studies = sa.Table(
        "studies",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _project(),
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
        sa.UniqueConstraint("project", "name", name="uq_studies_project_name"),
        sa.Index("ix_studies_state_id", "state", "id"),
    )
    trials = sa.Table(
        "trials",
        md,
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
        sa.Index("ix_trials_study_state_heartbeat", "study_id", "state", "heartbeat_at"),
        sa.Index("ix_trials_study_client", "study_id", "client_id"),
    )
    ivalues = sa.Table(
        "intermediate_values",
        md,
        sa.Column(
            "trial_id",
            sa.BigInteger(),
            sa.ForeignKey("trials.id", ondelete="CASCADE", name="fk_intermediate_values_trial"),
            primary_key=True,
        ),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    queue = sa.Table(
        "queue",
        md,
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
        sa.Index("ix_queue_study_priority_id", "study_id", "priority", "id"),
        sa.Index("ix_queue_source_trial", "source_trial_id"),
    )

    def model_fk(primary_key: bool = False) -> sa.Column:
        return sa.Column(
            "model_id",
            BigIntPK,
            sa.ForeignKey("model_names.id", ondelete="CASCADE"),
            nullable=False,
            primary_key=primary_key,
        )

    model_names = sa.Table(
        "model_names",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _project(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("project", "name", name="uq_model_names_project_name"),
    )
    model_versions = sa.Table(
        "model_versions",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        model_fk(),
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
    model_aliases = sa.Table(
        "model_aliases",
        md,
        model_fk(primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    model_alias_events = sa.Table(
        "model_alias_events",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        model_fk(),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Index("ix_model_alias_events_model_alias", "model_id", "alias", "id"),
    )
    model_comparisons = sa.Table(
        "model_comparisons",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        model_fk(),
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
        sa.Index("ix_model_comparisons_model", "model_id", "id"),
    )
    feature_groups = sa.Table(
        "feature_groups",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _project(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "project", "name", "version", name="uq_feature_groups_project_name_version"
        ),
    )
    training_sets = sa.Table(
        "feature_training_sets",
        md,
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        _project(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("labels", sa.LargeBinary(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "project", "name", "version", name="uq_feature_training_sets_project_name_version"
        ),
    )
    return [
        studies,
        trials,
        ivalues,
        queue,
        model_names,
        model_versions,
        model_aliases,
        model_alias_events,
        model_comparisons,
        feature_groups,
        training_sets,
    ]


def _rebuild_sqlite(bind: sa.Connection) -> None:
    tables = _new_tables(sa.MetaData())
    old = {t.name: f"_old_{t.name}" for t in tables}
    for t in tables:
        op.execute(f'ALTER TABLE "{t.name}" RENAME TO "{old[t.name]}"')
    for t in tables:  # index names are global: the renamed tables still hold them
        for ix in t.indexes:
            op.execute(f'DROP INDEX IF EXISTS "{ix.name}"')
    for t in tables:
        t.create(bind)
    for t in tables:  # parents first
        cols = ", ".join(f'"{c.name}"' for c in t.columns if c.name != "project")
        op.execute(f'INSERT INTO "{t.name}" ({cols}) SELECT {cols} FROM "{old[t.name]}"')
    for t in reversed(tables):  # children first: nothing refers to a table when it goes
        op.execute(f'DROP TABLE "{old[t.name]}"')
