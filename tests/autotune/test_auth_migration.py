"""Migration 0004 (projects): rows made before it land in project ``default`` intact, with
their children (trials, intermediate values, queue, model versions, aliases), and names become
unique per project, on SQLite (whose tables are rebuilt) and PostgreSQL (changed in place)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from autotune.service import StudyService
from autotune.storage import Database, current_revision, head_revision, upgrade
from autotune.storage.schema import StudyRow

SPEC = {"name": "old", "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "objectives": {"loss": "minimize"}, "algorithm": "random", "seed": 1}  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest) -> str:
    """A database no other test has migrated (the session's PostgreSQL one is at head)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_databases").create()


def test_upgrade_from_0003_keeps_every_row_in_the_default_project(fresh_url: str) -> None:
    db_url = fresh_url
    db = Database(db_url)
    try:
        upgrade(db, "0003_features")
        with db.write_engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO studies (name, state, space, objectives, constraints, algorithm, "
                "seed, metadata, n_trials, designer_info, created_at, updated_at) VALUES "
                "('old', 'active', :space, '{\"loss\": \"minimize\"}', '{}', 'random', 1, "
                "'{}', 1, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ), {"space": '{"params": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}]}'})  # fmt: skip
            sid = conn.execute(text("SELECT id FROM studies")).scalar_one()
            conn.execute(text(
                "INSERT INTO trials (study_id, number, state, params, metadata, "
                "has_intermediate, created_at) VALUES (:sid, 0, 'running', '{\"x\": 0.5}', "
                "'{}', true, CURRENT_TIMESTAMP)"
            ), {"sid": sid})  # fmt: skip
            tid = conn.execute(text("SELECT id FROM trials")).scalar_one()
            conn.execute(
                text("INSERT INTO intermediate_values VALUES (:t, 3, 0.25)"), {"t": tid}
            )
            conn.execute(text(
                "INSERT INTO model_names (name, created_at) VALUES ('m', CURRENT_TIMESTAMP)"
            ))  # fmt: skip
            mid = conn.execute(text("SELECT id FROM model_names")).scalar_one()
            conn.execute(text(
                "INSERT INTO model_aliases VALUES (:m, 'production', 1, 'me', CURRENT_TIMESTAMP)"
            ), {"m": mid})  # fmt: skip
        upgrade(db)
        assert current_revision(db) == head_revision()
        with db.read_engine.connect() as conn:
            assert conn.execute(text("SELECT project, name FROM studies")).all() == [
                ("default", "old")
            ]
            assert conn.execute(text("SELECT step, value FROM intermediate_values")).all() == [
                (3, 0.25)
            ]
            assert conn.execute(text("SELECT project, name FROM model_names")).all() == [
                ("default", "m")
            ]
            assert conn.execute(text("SELECT alias FROM model_aliases")).all() == [
                ("production",)
            ]
            assert conn.execute(text("SELECT name FROM projects")).all() == [("default",)]
    finally:
        db.dispose()
    # The service reads the old study in the default project; deleting it still cascades.
    with StudyService(db_url) as svc:
        assert svc.get_trial("old", 0).intermediate[0].value == 0.25
        svc.delete_study("old")
        with svc.db.read_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM trials")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM intermediate_values")).scalar() == 0


def test_names_are_unique_per_project_not_globally(db_url: str, unique_name: str) -> None:
    with StudyService(db_url) as svc:
        a = svc.create_study({**SPEC, "name": unique_name}, project="team-a")
        b = svc.create_study({**SPEC, "name": unique_name}, project="team-b")
        assert a.id != b.id
        with svc.db.write_engine.begin() as conn, pytest.raises(IntegrityError):
            row = conn.execute(select(StudyRow.__table__).where(StudyRow.id == a.id)).one()
            values = {k: v for k, v in row._mapping.items() if k != "id"}
            conn.execute(insert(StudyRow.__table__).values(**values))
