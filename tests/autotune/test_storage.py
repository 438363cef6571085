"""Storage: URLs, SQLite settings, migrations (also from two processes at once), retries."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from autotune.errors import AutotuneError, ConflictError, UnavailableError, ValidationError
from autotune.service import StudyService
from autotune.storage import Base, Database, current_revision, head_revision, normalize_url, upgrade
from autotune.storage.schema import StudyRow

REPO = Path(__file__).resolve().parents[2]
TABLES = {"alembic_version", "studies", "trials", "intermediate_values", "queue"}


def test_normalize_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h:5433/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").database == "x.db"
    monkeypatch.setenv("AUTOTUNE_DB", "sqlite:///from-env.db")
    assert normalize_url(None).database == "from-env.db"
    monkeypatch.delenv("AUTOTUNE_DB")
    assert normalize_url(None).database == "autotune.db"
    for bad in ("mysql://u@h/db", "not a url"):
        with pytest.raises(ValidationError) as e:
            normalize_url(bad)
        assert e.value.details["field"] == "db"


def test_sqlite_settings(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        upgrade(db)
        for engine in (db.write_engine, db.read_engine):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        db.dispose()


def test_migrations_create_the_schema_of_the_models(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        upgrade(db)
        upgrade(db)  # idempotent
        assert current_revision(db) == head_revision() is not None
        assert set(inspect(db.read_engine).get_table_names()) >= TABLES
        with db.read_engine.connect() as conn:
            # Only the core's tables: other packages' tables live in their own MetaData.
            mine = set(Base.metadata.tables)
            opts = {
                "compare_type": True,
                "include_name": lambda name, type_, _parent: type_ != "table" or name in mine,
            }
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
        assert diff == [], diff
    finally:
        db.dispose()


def test_autogenerate_sees_every_packages_tables_and_finds_nothing_to_do(db_url: str) -> None:
    """What ``alembic revision --autogenerate`` compares (the core's and every package's
    MetaData) is exactly what the migrations create: no table is missing from the list (else
    autogenerate would write a migration dropping it) and no model drifted from its migration."""
    from autotune.storage.migrate import all_metadata

    db = Database(db_url)
    try:
        upgrade(db)
        metadata = all_metadata()
        tables = set().union(*(md.tables for md in metadata))
        assert {"model_versions", "feature_groups", "feature_training_sets"} <= tables
        with db.read_engine.connect() as conn:
            opts = {"compare_type": True}
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
        assert diff == [], diff
        # The command line itself, through env.py, against the same database.
        url = db.url.render_as_string(hide_password=False)
        proc = subprocess.run(
            [
                sys.executable, "-m", "alembic", "-c",
                str(REPO / "autotune/storage/migrations/alembic.ini"), "-x", f"url={url}", "check",
            ],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "No new upgrade operations detected" in proc.stdout + proc.stderr
    finally:
        db.dispose()


def test_times_are_utc_aware(sqlite_url: str) -> None:
    plus2 = timezone(timedelta(hours=2))
    svc = StudyService(sqlite_url, clock=lambda: datetime(2030, 1, 1, 12, tzinfo=plus2))
    try:
        s = svc.create_study(
            {
                "name": "s",
                "space": {"x": {"type": "float", "low": 0, "high": 1}},
                "algorithm": "random",
            }
        )
        got = svc.get_study("s")
        assert got.created_at == s.created_at == datetime(2030, 1, 1, 10, tzinfo=UTC)
        assert got.created_at.utcoffset() == timedelta(0)
    finally:
        svc.close()


_MIGRATE_SCRIPT = """
import os, pathlib, sys, time
from autotune.service import StudyService
url, barrier, n = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
(barrier / str(os.getpid())).touch()  # imports done: wait for the others, then race
deadline = time.time() + 60
while len(list(barrier.iterdir())) < n and time.time() < deadline:
    time.sleep(0.002)
svc = StudyService(url)
svc.close()
print("ok")
"""


def _start_together(url: str, barrier: Path, n: int = 2) -> None:
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_SCRIPT, url, str(barrier), str(n)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]


@pytest.mark.slow
def test_two_processes_migrate_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    _start_together(url, tmp_path / "barrier")
    db = Database(url)
    try:
        assert current_revision(db) == head_revision()
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_migrate_a_fresh_postgres_database(
    postgres_databases: Any, tmp_path: Path
) -> None:
    url = postgres_databases.create("autotune_migrate")
    _start_together(url, tmp_path / "barrier")
    db = Database(url)
    try:
        assert current_revision(db) == head_revision()
        with db.read_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        db.dispose()


def test_run_retries_transient_errors_then_gives_up(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    upgrade(db)
    calls: list[int] = []

    def flaky(s: Any, attempt: int) -> str:
        calls.append(attempt)
        if attempt < 2:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return "done"

    try:
        assert db.run(flaky, write=True) == "done"
        assert calls == [0, 1, 2]

        def always_down(s: Any, attempt: int) -> None:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))

        with pytest.raises(UnavailableError) as e:
            db.run(always_down, write=True)
        assert e.value.retryable

        def broken(s: Any, attempt: int) -> None:
            raise OperationalError("SELECT x", {}, Exception("no such column: x"))

        with pytest.raises(UnavailableError):
            db.run(broken, write=False)

        def dup(s: Any, attempt: int) -> None:
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

        with pytest.raises(ConflictError):
            db.run(dup, write=True)

        def bad_sql(s: Any, attempt: int) -> None:
            s.execute(text("SELEC nonsense"))

        with pytest.raises(AutotuneError):
            db.run(bad_sql, write=False)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgres_dropped_connection_is_retried(postgres_url: str) -> None:
    """A server-side kill of the pooled connection is invisible to the caller."""
    db = Database(postgres_url, pool_size=1, max_overflow=0)
    upgrade(db)
    try:
        pid = db.run(lambda s, _: s.execute(text("SELECT pg_backend_pid()")).scalar(), write=False)
        admin = Database(postgres_url)
        try:
            admin.run(
                lambda s, _: s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}),
                write=True,
            )
        finally:
            admin.dispose()
        n = db.run(lambda s, _: s.execute(select(StudyRow.id).limit(1)).all(), write=False)
        assert isinstance(n, list)
    finally:
        db.dispose()


def test_foreign_schema_is_refused_clearly(tmp_path: Path) -> None:
    """Another application's Alembic database (Optuna's, say) is not migrated over."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    db = Database(url)
    with db.write_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('v3.2.0.a')")
    db.dispose()
    with pytest.raises(AutotuneError, match="another application"):
        StudyService(url)


def test_unreachable_database_is_unavailable() -> None:
    with pytest.raises(UnavailableError):
        StudyService("postgresql://nobody@127.0.0.1:1/none")


def test_in_memory_database_serves_threads() -> None:
    import threading

    svc = StudyService("sqlite://")
    try:
        svc.create_study(
            {
                "name": "m",
                "space": {"x": {"type": "float", "low": 0, "high": 1}},
                "algorithm": "random",
                "max_trials": 40,
            }
        )

        def work() -> None:
            for _ in range(10):
                for t in svc.suggest("m").trials:
                    svc.observe("m", t.number, {"value": 1.0})

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert svc.list_trials("m").total == 40
        assert svc.get_study("m").state == "completed"
    finally:
        svc.close()
