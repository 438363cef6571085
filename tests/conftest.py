"""Shared fixtures: database URLs for SQLite and for the PostgreSQL server on this machine.

``db_url`` runs a test on both (ids ``sqlite`` and ``postgres``). The PostgreSQL database is
created fresh for the test session and dropped at its end; tests share it, so they use unique
study names (``unique_name``). Without a reachable server the PostgreSQL tests fail, unless
``AUTOTUNE_SKIP_POSTGRES=1`` (then they are skipped).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

PG_HOST = os.environ.get("AUTOTUNE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AUTOTUNE_PG_PORT", "5432"))
PG_USER = os.environ.get("AUTOTUNE_PG_USER", "postgres")


def _pg_admin_conninfo() -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres connect_timeout=5"


def pg_url(dbname: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("AUTOTUNE_SKIP_POSTGRES") == "1":
        pytest.skip(f"PostgreSQL skipped (AUTOTUNE_SKIP_POSTGRES=1): {reason}")
    pytest.fail(
        f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({reason}); start it, or set "
        "AUTOTUNE_SKIP_POSTGRES=1 to skip the PostgreSQL tests",
        pytrace=False,
    )


class PostgresDatabases:
    """Creates fresh databases on the server and drops them all at the end of the session."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, prefix: str = "autotune_test") -> str:
        import psycopg

        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        try:
            with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as e:
            _pg_unavailable(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        self.created.append(name)
        return pg_url(name)

    def drop_all(self) -> None:
        if not self.created:
            return
        import psycopg

        with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """Make more fresh PostgreSQL databases (``.create()``); all dropped at session end."""
    dbs = PostgresDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """A fresh PostgreSQL database for the whole test session."""
    return postgres_databases.create()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of this test's own."""
    return f"sqlite:///{tmp_path / 'autotune.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A study name no other test uses (tests share the session's PostgreSQL database)."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name)[:80]
    return f"{base}_{secrets.token_hex(4)}"


class FakeClock:
    """A clock that tests move by hand (heartbeats expire without sleeping)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
