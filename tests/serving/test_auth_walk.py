"""Project isolation, walked over every operation of ``autotune serve --auth`` (SQLite and
PostgreSQL, real uvicorn on loopback).

Project A owns a study (with trials, a report, a queued configuration), a model (two versions,
an alias that moved twice, so it has a history), a feature group with rows and a training set.
Then every operation of the app (the OpenAPI document's, plus the app's routes that it leaves
out) is sent with project B's keys, A's names in the path and a valid body: each must answer
401, 403 or 404, never 2xx or 5xx. Operations without a resource in the path (listings) may
answer 2xx but must not show any of A's names; operations that create by name (a study, a
model version, a feature group, a training set, a key) run last and make B's own resources.
Afterwards A's resources read exactly as before. Without a key every operation but health is
401. New endpoints are covered without touching this test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_helpers import FEATURES, free_port, train_models

from autotune.auth import KeyStore
from autotune.storage import Database, upgrade
from serving.schemas import Signature

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A's resources: names no other test or listing could show by accident.
STUDY, MODEL, GROUP, TSET = "alpha_study_q7", "alpha_model_q7", "alpha_group_q7", "alpha_tset_q7"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
GROUP_SPEC = {
    "name": GROUP,
    "entities": [{"name": "customer_id", "dtype": "int"}],
    "event_time": "ts",
    "features": [{"name": "spend", "dtype": "float"}],
}
ROW = {"customer_id": 1, "ts": "2030-01-01T00:00:00Z", "spend": 2.5}
TSET_BODY = {
    "name": TSET,
    "features": [f"{GROUP}:spend"],
    "labels": [{"customer_id": 1, "timestamp": "2030-01-01T01:00:00Z"}],
}
# Operations that create a resource of the caller's own project by name.
CREATES = {
    ("POST", "/v1/studies"),
    ("POST", "/v1/models/{name}/versions"),
    ("POST", "/v1/feature-groups"),
    ("POST", "/v1/training-sets"),
    ("POST", "/v1/keys"),
}
PUBLIC = re.compile(r"^/(v1/health(/.*)?|v2/health/(live|ready))$")


@dataclass
class World:
    url: str
    keys: dict[str, str]
    key_ids: dict[str, str]
    register_body: dict[str, Any]
    example: dict[str, float]
    routes: list[tuple[str, str]]


def _h(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _app_routes(db_url: str, tmp: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route of the app ``autotune serve`` runs, those left
    out of the OpenAPI document included (the fast predict paths, the dashboard's pages)."""
    from starlette.routing import Route

    from autotune.api.app import create_app

    app = create_app(db_url=db_url, serving=True, auth=True, artifact_dir=str(tmp / "store"))
    try:
        return {
            (m, r.path)
            for r in app.routes
            if isinstance(r, Route)
            for m in (r.methods or ())
            if m in METHODS
        }
    finally:
        app.state.service.close()


def _start(db_url: str, tmp: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    env.update(PYTHONPATH=str(REPO), AUTOTUNE_MODEL_STORE=str(tmp / "store"))
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--auth"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "server.log").read_text()[-3000:])
        try:
            if httpx.get(proc.url + "/v2/health/ready", timeout=2).status_code == 200:  # type: ignore[attr-defined]
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start:\n" + (tmp / "server.log").read_text()[-3000:])


def _ok(r: httpx.Response) -> Any:
    assert r.is_success, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}"
    return r.json() if r.content else None


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth_walk")
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp / 'autotune.db'}"
    else:
        db_url = request.getfixturevalue("postgres_databases").create()
    db = Database(db_url)
    upgrade(db)
    store = KeyStore(db)
    keys, ids = {}, {}
    for label, project, scope in [
        ("a_admin", "team-a", "admin"),
        ("b_admin", "team-b", "admin"),
        ("b_read", "team-b", "read"),
        ("operator", "default", "admin"),
    ]:
        info, secret = store.create(project=project, scope=scope, name=label)
        keys[label], ids[label] = secret, info.id
    db.dispose()
    routes = _app_routes(db_url, tmp)
    models = train_models()
    register_body = {
        "artifact_base64": base64.b64encode(models.small).decode(),
        "format": "xgboost-ubj",
        "signature": Signature.from_names(FEATURES).model_dump(mode="json"),
        "input_example": models.examples[:2],
        "metrics": {"auc": 0.9},
    }
    proc = _start(db_url, tmp)
    url = proc.url  # type: ignore[attr-defined]
    try:
        with httpx.Client(base_url=url, headers=_h(keys["a_admin"]), timeout=60) as a:
            _ok(a.post("/v1/studies", json={"name": STUDY, "space": SPACE, "algorithm": "random"}))
            _ok(a.post(f"/v1/studies/{STUDY}/suggest", json={"count": 2}))
            _ok(a.post(f"/v1/studies/{STUDY}/trials/0/observe", json={"values": {"value": 0.3}}))
            _ok(a.post(f"/v1/studies/{STUDY}/trials/1/report", json={"step": 1, "value": 0.4}))
            _ok(a.post(f"/v1/studies/{STUDY}/enqueue", json={"params": {"x": 0.25}}))
            for _ in range(2):
                _ok(a.post(f"/v1/models/{MODEL}/versions", json=register_body))
            _ok(a.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1}))
            _ok(a.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 2}))
            _ok(a.post("/v1/feature-groups", json=GROUP_SPEC))
            _ok(a.post(f"/v1/feature-groups/{GROUP}/ingest", json={"rows": [ROW]}))
            _ok(a.post("/v1/training-sets", json=TSET_BODY))
            openapi = _ok(a.get("/openapi.json"))
        for path, ops in openapi["paths"].items():
            routes |= {(m.upper(), path) for m in ops if m.upper() in METHODS}
        yield World(url, keys, ids, register_body, models.examples[0], sorted(routes))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _state_of_a(w: World) -> dict[str, Any]:
    """Everything of project A's, read with A's key."""
    with httpx.Client(base_url=w.url, headers=_h(w.keys["a_admin"]), timeout=60) as a:
        return {
            "study": _ok(a.get(f"/v1/studies/{STUDY}")),
            "studies": _ok(a.get("/v1/studies")),
            "trials": _ok(a.get(f"/v1/studies/{STUDY}/trials", params={"limit": 1000})),
            "best": _ok(a.get(f"/v1/studies/{STUDY}/best")),
            "models": _ok(a.get("/v1/models")),
            "model": _ok(a.get(f"/v1/models/{MODEL}")),
            "history": _ok(a.get(f"/v1/models/{MODEL}/aliases/production/history")),
            "predict": _ok(a.post(f"/v1/models/{MODEL}/predict", json={"rows": [w.example]}))[
                "predictions"
            ],
            "groups": _ok(a.get("/v1/feature-groups")),
            "group": _ok(a.get(f"/v1/feature-groups/{GROUP}")),
            "online": _ok(
                a.post(
                    f"/v1/feature-groups/{GROUP}/online", json={"entities": [{"customer_id": 1}]}
                )
            ),
            "training_set": _ok(a.get(f"/v1/training-sets/{TSET}")),
            "training_sets": _ok(a.get("/v1/training-sets")),
            "keys": _ok(a.get("/v1/keys")),
        }


_PARAMS = {
    "study": STUDY,
    "number": "0",
    "alias": "production",
    "version": "1",
    "ref": "1",
    "kind": "history",
}


def _fill(path: str, w: World) -> tuple[str, bool]:
    """The path with A's resources in it, and whether every parameter named one of them."""
    known = True

    def value(m: re.Match[str]) -> str:
        nonlocal known
        name = m.group(1).split(":")[0]
        if name == "name":
            if path.startswith("/v1/feature-groups"):
                return GROUP
            if path.startswith("/v1/training-sets"):
                return TSET
            return MODEL
        if name == "key_id":
            return w.key_ids["a_admin"]
        if name in _PARAMS:
            return _PARAMS[name]
        known = False
        return "x"

    return re.sub(r"\{([^}]+)\}", value, path), known


def _body(method: str, path: str, w: World) -> dict[str, Any]:
    """A valid request for the operation, so that only authorization can refuse it."""
    if method not in ("POST", "PUT", "PATCH"):
        return {}
    end = path.rsplit("/", 1)[-1]
    bodies: dict[str, Any] = {
        "suggest": {"count": 1},
        "observe": {"values": {"value": 0.9}},
        "report": {"step": 7, "value": 0.9},
        "fail": {"reason": "walked"},
        "enqueue": {"params": {"x": 0.75}},
        "{alias}": {"version": 1},
        "rollback": {},
        "promote-if-better": {"alias": "production", "metric": "auc", "direction": "maximize"},
        "predict": {"rows": [w.example]},
        "infer": {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, len(FEATURES)],
                    "datatype": "FP64",
                    "data": [w.example[f] for f in FEATURES],
                }
            ]
        },  # fmt: skip
        "ingest": {"rows": [{**ROW, "spend": 99.0}]},
        "push": {**ROW, "spend": 99.0},
        "online": {"entities": [{"customer_id": 1}]},
    }
    if end in bodies:
        return {"json": bodies[end]}
    if (method, path) == ("POST", "/v1/studies"):
        return {"json": {"name": STUDY, "space": SPACE, "algorithm": "random"}}
    if (method, path) == ("POST", "/v1/models/{name}/versions"):
        return {"json": w.register_body}
    if (method, path) == ("POST", "/v1/feature-groups"):
        return {"json": GROUP_SPEC}
    if (method, path) == ("POST", "/v1/training-sets"):
        return {"json": TSET_BODY}
    if (method, path) == ("POST", "/v1/keys"):
        return {"json": {"scope": "admin"}}
    return {"json": {}}


def _leaks(text: str, w: World) -> list[str]:
    return [s for s in (STUDY, MODEL, GROUP, TSET, w.key_ids["a_admin"]) if s in text]


# b_read first: its creates are refused, while b_admin's make B's own resources of the same
# names (last, after every listing was checked for A's names).
@pytest.mark.parametrize("foreign", ["b_read", "b_admin"])
def test_a_foreign_key_reaches_nothing_of_another_project(world: World, foreign: str) -> None:
    w = world
    before = _state_of_a(w)
    assert before["trials"]["total"] == 2 and before["model"]["versions"] == [1, 2]
    assert len(w.routes) > 40, w.routes  # studies, trials, plots, models, features, keys...
    refused, listed, created = [], [], []
    ordered = [r for r in w.routes if r not in CREATES] + sorted(CREATES & set(w.routes))
    with httpx.Client(base_url=w.url, headers=_h(w.keys[foreign]), timeout=60) as b:
        for method, template in ordered:
            if PUBLIC.match(template):
                continue
            path, strict = _fill(template, w)
            r = b.request(method, path, **_body(method, template, w))
            what = f"{foreign} {method} {template} -> {r.status_code}: {r.text[:300]}"
            assert r.status_code < 500, what
            if (method, template) in CREATES:
                # The caller's own resource, or refused; never A's.
                assert r.status_code in (200, 201, 401, 403, 404, 409, 422), what
                created.append(what)
            elif "{" in template and strict:
                assert r.status_code in (401, 403, 404), what
                refused.append(what)
            else:
                assert not r.is_success or not _leaks(r.text, w), what
                listed.append(what)
    assert refused and listed and created
    after = _state_of_a(w)
    # The key A listed before: B's creates made B's keys, not A's.
    assert after == before


def test_without_a_key_every_operation_but_health_is_401(world: World) -> None:
    with httpx.Client(base_url=world.url, timeout=60) as anon:
        for method, template in world.routes:
            path, _ = _fill(template, world)
            r = anon.request(method, path, **_body(method, template, world))
            if PUBLIC.match(template):
                assert r.status_code < 500, (method, template, r.status_code)
            else:
                assert r.status_code == 401, (method, template, r.status_code, r.text[:200])
                assert r.json()["error"]["code"] == "unauthenticated"


def test_model_names_in_two_projects_do_not_collide(world: World) -> None:
    """B registers its own model under A's model name: each key predicts with its own."""
    w = world
    with (
        httpx.Client(base_url=w.url, headers=_h(w.keys["a_admin"]), timeout=60) as a,
        httpx.Client(base_url=w.url, headers=_h(w.keys["b_admin"]), timeout=60) as b,
    ):
        mine = _ok(b.post(f"/v1/models/{MODEL}/versions", json=w.register_body))
        assert mine["name"] == MODEL
        b_versions = _ok(b.get(f"/v1/models/{MODEL}"))["versions"]
        a_model = _ok(a.get(f"/v1/models/{MODEL}"))
        assert a_model["versions"] == [1, 2] and a_model["aliases"] == {"production": 2}
        assert b_versions[-1] == mine["version"]
        r = _ok(b.post(f"/v1/models/{MODEL}/predict", json={"rows": [w.example]}))
        assert r["version"] == b_versions[-1] and r["alias"] is None
        r = _ok(a.post(f"/v1/models/{MODEL}/predict", json={"rows": [w.example]}))
        assert r["version"] == 2 and r["alias"] == "production"
        # A qualified name in a path is never an alias for another project's model.
        r = b.get(f"/v1/models/team-a~{MODEL}")
        assert r.status_code == 404
    # The operator's /metrics counts each project's model on its own series.
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{w.url}/metrics", headers=_h(w.keys["operator"]), timeout=60).text
    ok = {
        (s.labels["model"], s.labels["version"], s.labels["alias"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "autotune_serving_requests_total" and s.labels["code"] == "200"
    }
    assert (f"team-a~{MODEL}", "2", "production") in ok, text
    assert (f"team-b~{MODEL}", str(b_versions[-1]), "") in ok, text
    assert f'model="{MODEL}"' not in text  # no series under the bare, ambiguous name
    assert json.loads(json.dumps(a_model))  # plain JSON all the way


def test_serve_models_with_auth_needs_a_key(tmp_path: Path) -> None:
    """The serving-only app (``autotune serve-models --auth``) checks keys the same way."""
    from serving_helpers import start_server, stop_server

    db_url = f"sqlite:///{tmp_path / 'autotune.db'}"
    db = Database(db_url)
    upgrade(db)
    _, key = KeyStore(db).create(project="default", scope="read")
    db.dispose()
    server = start_server(db_url, tmp_path / "store", tmp_path / "server.log", "--auth")
    try:
        assert httpx.get(server.url + "/v2/health/live").status_code == 200
        r = httpx.get(server.url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert httpx.get(server.url + "/v1/models", headers={"X-API-Key": key}).status_code == 200
        r = httpx.put(
            server.url + "/v1/models/m/aliases/production",
            json={"version": 1},
            headers={"X-API-Key": key},
        )
        assert r.status_code == 403
    finally:
        stop_server(server)
