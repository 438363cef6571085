"""Apply the Alembic migrations on start, safely when several processes start at once.

The upgrade runs in one transaction that first takes a database-wide lock: PostgreSQL's
``pg_advisory_xact_lock`` (released at commit), SQLite's ``BEGIN IMMEDIATE`` write lock (plus this
process's write lock). Whoever comes second waits, then finds the schema at head and does
nothing. DDL is transactional on both databases, so a crash mid-upgrade leaves no half schema.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.exc import SQLAlchemyError

from autotune.errors import AutotuneError
from autotune.storage.engine import Database

__all__ = [
    "upgrade",
    "current_revision",
    "head_revision",
    "alembic_config",
    "all_metadata",
    "MIGRATIONS_DIR",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key: any constant 64-bit number unique to AutoTune's migrations.
_PG_MIGRATION_LOCK_KEY = 0x4155544F54554E45  # "AUTOTUNE"


# "module:attribute" of every package's MetaData whose tables the migration chain creates, beside
# the core's ``Base.metadata``. Imported only for autogenerate and the schema test: the tuning
# core must not import the serving packages when the service applies migrations on start.
PACKAGE_METADATA = ["serving.registry:metadata", "serving.features.tables:metadata"]


def all_metadata() -> list[MetaData]:
    """The MetaData of every table the migrations create (what ``--autogenerate`` compares)."""
    from autotune.storage.schema import Base

    out = [Base.metadata]
    for ref in PACKAGE_METADATA:
        module, _, attr = ref.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def upgrade_connection_locked(db: Database) -> Iterator[Connection]:
    """A connection inside a transaction that holds the migration lock; commits on exit."""
    with db.write_lock(), db.write_engine.connect() as conn, conn.begin():
        if db.is_postgres:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        # On SQLite the engine's begin already was BEGIN IMMEDIATE: we hold the write lock.
        yield conn


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema of ``db`` to ``revision`` (a no-op when it is there already)."""
    if revision == "head" and _at_head(db):
        return
    try:
        with upgrade_connection_locked(db) as conn:
            command.upgrade(alembic_config(conn), revision)
    except CommandError as e:
        url = db.url.render_as_string(hide_password=True)
        raise AutotuneError(
            f"cannot migrate the database at {url}: {e}. Its schema comes from a newer AutoTune "
            "or from another application; point AUTOTUNE_DB (or --db) at AutoTune's own database",
            details={"db": url},
        ) from e


def _at_head(db: Database) -> bool:
    """Cheap check before taking any lock, so a restart on a current schema writes nothing."""
    try:
        return current_revision(db) == head_revision()
    except SQLAlchemyError:  # e.g. unreachable for a moment: let the locked path decide
        return False
