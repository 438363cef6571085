"""The registry and the model server on PostgreSQL (a fresh database, dropped at the end)."""

from __future__ import annotations

import threading
import time

import pytest
from serving_helpers import register, start_server, stop_server

from serving.registry import ModelRegistry

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_postgres_register_promote_predict_rollback(postgres_databases, tmp_path, models):
    url = postgres_databases.create(prefix="autotune_serving")
    store = tmp_path / "store"
    reg = ModelRegistry(url, store=store)
    try:
        # Concurrent registrations get distinct, gap-free version numbers.
        out: list[int] = []

        def reg_one(which: str) -> None:
            r = ModelRegistry(reg.db, store=store, migrate=False)
            out.append(register(r, models, "pg", which=which).version)

        threads = [
            threading.Thread(target=reg_one, args=("small" if i % 2 else "large",))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(out) == [1, 2, 3, 4, 5, 6]
        small = next(
            v.version for v in reg.get_model("pg").model_versions if v.metrics["auc"] == 0.9
        )
        large = next(
            v.version for v in reg.get_model("pg").model_versions if v.metrics["auc"] != 0.9
        )
        reg.promote("pg", small)

        server = start_server(url, store, tmp_path / "server.log")
        try:
            with server.client() as c:
                rows = {"rows": models.examples}
                got = c.post("/v1/models/pg/predict", json=rows).json()
                assert (got["version"], got["alias"]) == (small, "production")
                r = c.put("/v1/models/pg/aliases/production", json={"version": large})
                assert r.status_code == 200, r.text
                assert c.post("/v1/models/pg/predict", json=rows).json()["version"] == large
                reg.rollback("pg", actor="oncall")  # from this process: the server polls
                deadline = time.monotonic() + 5
                while c.post("/v1/models/pg/predict", json=rows).json()["version"] != small:
                    assert time.monotonic() < deadline, "rollback not picked up"
                    time.sleep(0.05)
                for path in ("/v1/models/p%00g", "/v1/models/pg/versions/st%00ging"):
                    r = c.get(path)  # NUL would be a database error on PostgreSQL
                    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
                r = c.post("/v1/models/p%00g/predict", json=rows)
                assert r.status_code == 404
                hist = c.get("/v1/models/pg/history").json()["events"]
                assert [e["actor"] for e in hist][:2] == ["oncall", "api"]
        finally:
            stop_server(server)
    finally:
        reg.close()
