"""Raw HTTP checks of the REST API: shapes, status codes and error bodies, against a real
uvicorn server (``server_url``), plus in-process checks of the catch-all handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autotune.api.app import create_app

STUDY = {
    "space": {
        "lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
        "depth": {"type": "int", "low": 2, "high": 12},
        "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    },
    "objectives": {"loss": "minimize"},
}


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server_url}/v1", timeout=30) as c:
        yield c


@pytest.fixture
def name(http: httpx.Client, unique_name: str) -> str:
    r = http.post("/studies", json={"name": unique_name, **STUDY})
    assert r.status_code == 201, r.text
    return unique_name


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in r.text
    return body["error"]


def test_health(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_study_lifecycle_shapes(http: httpx.Client, unique_name: str) -> None:
    r = http.post("/studies", json={"name": unique_name, **STUDY})
    assert r.status_code == 201
    study = r.json()
    assert study["name"] == unique_name and study["state"] == "active"
    assert study["objectives"] == {"loss": "minimize"} and study["n_trials"] == 0

    assert http.get(f"/studies/{unique_name}").json()["id"] == study["id"]
    page = http.get("/studies", params={"limit": 500}).json()
    assert {"items", "total", "offset", "limit"} <= set(page)
    assert unique_name in [s["name"] for s in page["items"]]

    for verb, state in (("pause", "paused"), ("resume", "active"), ("complete", "completed")):
        r = http.post(f"/studies/{unique_name}/{verb}")
        assert r.status_code == 200 and r.json()["state"] == state
    completed = http.get("/studies", params={"state": "completed", "limit": 500}).json()
    assert unique_name in [s["name"] for s in completed["items"]]

    r = http.delete(f"/studies/{unique_name}")
    assert r.status_code == 200 and r.json() == {"name": unique_name, "deleted": True}
    error(http.get(f"/studies/{unique_name}"), 404, "not_found")


def test_trial_flow_shapes(http: httpx.Client, name: str) -> None:
    r = http.post(f"/studies/{name}/suggest", json={"count": 2, "client_id": "w1"})
    assert r.status_code == 200
    body = r.json()
    assert body["study_state"] == "active"
    assert [t["number"] for t in body["trials"]] == [0, 1]
    t0 = body["trials"][0]
    assert t0["state"] == "running" and set(t0["params"]) == {"lr", "depth", "booster"}
    again = http.post(f"/studies/{name}/suggest", json={"count": 2, "client_id": "w1"}).json()
    assert [t["number"] for t in again["trials"]] == [0, 1]
    assert http.post(f"/studies/{name}/suggest").json()["trials"][0]["number"] == 2  # no body

    r = http.post(f"/studies/{name}/trials/0/report", json={"step": 3, "value": 0.2})
    assert r.status_code == 200 and r.json() == {"should_stop": False}
    r = http.post(f"/studies/{name}/trials/0/heartbeat")
    assert r.status_code == 200 and r.json()["state"] == "running"
    r = http.post(
        f"/studies/{name}/trials/0/observe",
        json={"values": {"loss": 0.12}, "metadata": {"host": "a"}},
    )
    assert r.status_code == 200
    assert r.json()["state"] == "completed" and r.json()["values"] == {"loss": 0.12}
    r = http.post(f"/studies/{name}/trials/1/fail", json={"reason": "OOM"})
    assert r.status_code == 200 and r.json()["state"] == "failed" and r.json()["error"] == "OOM"

    trial = http.get(f"/studies/{name}/trials/0").json()
    assert trial["intermediate"] == [{"step": 3, "value": 0.2}]
    page = http.get(f"/studies/{name}/trials", params={"state": "completed"}).json()
    assert [t["number"] for t in page["items"]] == [0] and page["total"] == 1
    page = http.get(f"/studies/{name}/trials", params={"offset": 1, "limit": 1}).json()
    assert [t["number"] for t in page["items"]] == [1] and page["total"] == 3
    assert [t["number"] for t in http.get(f"/studies/{name}/best").json()["trials"]] == [0]

    params = {"lr": 0.01, "depth": 3, "booster": "dart"}
    r = http.post(f"/studies/{name}/enqueue", json={"params": params})
    assert r.status_code == 201 and r.json()["params"] == params
    assert http.post(f"/studies/{name}/suggest").json()["trials"][0]["params"] == params


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"values": ', "body"),  # malformed JSON
        (b'{"values": {"loss": "abc"}}', "values.loss"),  # wrong type
        (b'{"values": [1, 2]}', "values"),
        (b'{"vals": {"loss": 1}}', "values"),  # missing field
        (b"[]", "body"),
        (b'{"values": {"loss": NaN}}', "values.loss"),  # parsed, refused by the service
    ],
)
def test_bad_observe_bodies_are_422(
    http: httpx.Client, name: str, content: bytes, field: str
) -> None:
    http.post(f"/studies/{name}/suggest")
    r = http.post(
        f"/studies/{name}/trials/0/observe",
        content=content,
        headers={"content-type": "application/json"},
    )
    err = error(r, 422, "invalid_argument")
    assert err["details"]["field"] == field
    assert field.split(".")[-1] in err["message"] or "JSON" in err["message"]
    assert http.get(f"/studies/{name}/trials/0").json()["state"] == "running"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/studies", {"json": {"name": "x y", **STUDY}}),
        ("post", "/studies", {"json": {"name": "ok", "space": {"a": {"type": "float"}}}}),
        ("post", "/studies", {"json": {"name": "ok", "space": {}, "bogus": 1}}),
        (
            "post",
            "/studies",
            {"json": {"name": "ok", "space": {"x": {"type": "int", "low": 3, "high": 1}}}},
        ),
        ("post", "/studies", {"content": b"not json"}),
        ("get", "/studies", {"params": {"limit": 0}}),
        ("get", "/studies", {"params": {"limit": "many"}}),
        ("get", "/studies", {"params": {"state": "sleeping"}}),
        ("get", "/studies", {"params": {"offset": -1}}),
        ("post", "/studies/{name}/suggest", {"json": {"count": 0}}),
        ("post", "/studies/{name}/suggest", {"json": {"count": "two"}}),
        ("post", "/studies/{name}/suggest", {"json": {"count": 100000}}),
        ("post", "/studies/{name}/suggest", {"json": {"client_id": "a\u0000b"}}),
        ("post", "/studies/{name}/trials/0/report", {"json": {"step": -1, "value": 1}}),
        ("post", "/studies/{name}/trials/0/report", {"json": {"step": 1}}),
        ("post", "/studies/{name}/trials/0/fail", {"json": {"reason": 5}}),
        ("post", "/studies/{name}/enqueue", {"json": {"params": {"lr": 99}}}),
        ("post", "/studies/{name}/enqueue", {"json": {"params": {"nope": 1}}}),
        ("get", "/studies/{name}/trials/-1", {}),
        ("get", "/studies/{name}/trials/abc", {}),
    ],
)
def test_bad_input_is_422_never_500(
    http: httpx.Client, name: str, method: str, path: str, kwargs: dict
) -> None:
    if "content" in kwargs:
        kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
    r = http.request(method, path.format(name=name), **kwargs)
    err = error(r, 422, "invalid_argument")
    assert err["details"].get("field") or err["details"].get("errors")


def test_not_found_and_conflicts(http: httpx.Client, name: str) -> None:
    error(http.get("/studies/no_such_study"), 404, "not_found")
    error(http.post("/studies/no_such_study/suggest"), 404, "not_found")
    error(http.get(f"/studies/{name}/trials/7"), 404, "not_found")
    error(http.get(f"/studies/{name}/trials/{2**70}"), 404, "not_found")
    error(http.get("/studies/bad%00name"), 404, "not_found")
    error(http.get("/no/such/route"), 404, "not_found")
    error(http.get("/v2/studies", params={}), 404, "not_found")
    err = error(http.delete("/health"), 405, "method_not_allowed")
    assert "DELETE" in err["message"]
    error(http.post("/studies", json={"name": name, **STUDY}), 409, "already_exists")
    http.post(f"/studies/{name}/suggest")
    http.post(f"/studies/{name}/trials/0/observe", json={"values": {"loss": 1}})
    error(
        http.post(f"/studies/{name}/trials/0/observe", json={"values": {"loss": 1}}),
        409,
        "trial_finished",
    )
    http.post(f"/studies/{name}/pause")
    error(http.post(f"/studies/{name}/suggest"), 409, "study_not_active")


def test_openapi_documents_every_route(server_url: str) -> None:
    spec = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    paths = spec["paths"]
    expected = {
        ("/v1/studies", "post"), ("/v1/studies", "get"), ("/v1/studies/{study}", "get"),
        ("/v1/studies/{study}", "delete"), ("/v1/studies/{study}/pause", "post"),
        ("/v1/studies/{study}/resume", "post"), ("/v1/studies/{study}/complete", "post"),
        ("/v1/studies/{study}/suggest", "post"), ("/v1/studies/{study}/trials", "get"),
        ("/v1/studies/{study}/trials/{number}", "get"),
        ("/v1/studies/{study}/trials/{number}/observe", "post"),
        ("/v1/studies/{study}/trials/{number}/report", "post"),
        ("/v1/studies/{study}/trials/{number}/fail", "post"),
        ("/v1/studies/{study}/trials/{number}/heartbeat", "post"),
        ("/v1/studies/{study}/enqueue", "post"), ("/v1/studies/{study}/best", "get"),
        ("/v1/health", "get"),
    }  # fmt: skip
    found = {(p, m) for p, ops in paths.items() for m in ops}
    assert expected <= found
    for p, m in expected:
        op = paths[p][m]
        assert op["summary"] and op["tags"], (p, m)
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        assert "$ref" in str(ok["content"]["application/json"]["schema"]), (p, m)
    assert httpx.get(f"{server_url}/docs", timeout=30).status_code == 200


# -- in-process: the handlers for what a healthy service never raises -------------------------
class _Broken:
    """A service whose every call fails the way a bug or a lost database would."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.exc

        return fail


def _call(exc: Exception, path: str = "/v1/studies/s1") -> httpx.Response:
    app = create_app(_Broken(exc))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get(path)

    return asyncio.run(get())


def test_unexpected_error_is_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="autotune.api"):
        r = _call(RuntimeError("secret internals at 0xdeadbeef"))
    err = error(r, 500, "internal")
    assert "secret" not in r.text and "0xdeadbeef" not in r.text
    assert "secret internals" in caplog.text  # logged server-side, with the traceback
    assert err["details"] == {}


def test_database_down_is_503() -> None:
    from sqlalchemy.exc import OperationalError

    r = _call(OperationalError("SELECT 1", {}, Exception("connection refused")))
    error(r, 503, "unavailable")
    assert r.headers.get("retry-after") == "1"
    error(_call(OperationalError("SELECT 1", {}, Exception("x")), "/v1/health"), 503, "unavailable")
