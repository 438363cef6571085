"""The prediction paths skip the app's middleware layers (serving/fastpath.py's front door,
serving/app.py's ServingApp) but keep every guarantee of those layers: the body limit (413),
the rate limit (429 with Retry-After, loopback exempt unless configured), API keys and project
scoping (401, 403, 404), and a JSON 500 without a traceback when the model itself fails. Each
against a real ``serve-models`` on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serving_helpers import FEATURES, Server, register, start_server, stop_server

from autotune.auth import KeyStore
from autotune.storage import Database, upgrade
from serving.fastpath import FastPath, FrontDoor
from serving.registry import ModelRegistry
from serving.schemas import Feature, Signature

PREDICT_LIMIT = 4000  # bytes: a 1-row body fits, a 50-row body does not


def _rows(models: Any, n: int) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, models.x[i % 50]), strict=True)) for i in range(n)]


def _chunked(body: bytes) -> Iterator[bytes]:
    # A generator body: httpx sends it with Transfer-Encoding: chunked, no Content-Length.
    for i in range(0, len(body), 1000):
        yield body[i : i + 1000]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, models: Any) -> Iterator[dict[str, Any]]:
    """A registry with model ``m`` (XGBoost) and ``nan`` (a scikit-learn linear model that
    raises on NaN inside its predict call), keys of two projects, and three servers on it:
    ``limits`` (small predict body limit, slow rate, loopback exempt as by default),
    ``loopback_limited`` (the same rate, loopback limited too) and ``auth`` (API keys on)."""
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    tmp = tmp_path_factory.mktemp("front")
    db_url = f"sqlite:///{tmp / 'autotune.db'}"
    store = tmp / "store"
    db = Database(db_url)
    upgrade(db)
    keys = KeyStore(db)
    _, read_key = keys.create(project="default", scope="read")
    _, other_key = keys.create(project="team-b", scope="read")
    db.dispose()
    reg = ModelRegistry(db_url, store=store)
    register(reg, models, "m")
    reg.promote("m", 1)
    lin = LinearRegression().fit(models.x[:, :2], models.y)
    reg.register(
        "nan",
        artifact=sio.dumps(lin),
        format="sklearn-skops",
        signature=Signature(inputs=[Feature(name="a", nullable=True), Feature(name="b")]),
    )
    reg.close()
    rate = {"AUTOTUNE_RATE_LIMIT": "1", "AUTOTUNE_RATE_BURST": "3"}
    servers: dict[str, Server] = {}
    try:
        servers["limits"] = start_server(
            db_url, store, tmp / "limits.log",
            env={**rate, "AUTOTUNE_MAX_PREDICT_BYTES": str(PREDICT_LIMIT)},
        )  # fmt: skip
        servers["loopback_limited"] = start_server(
            db_url, store, tmp / "loopback.log",
            env={**rate, "AUTOTUNE_RATE_LIMIT_LOOPBACK": "1"},
        )  # fmt: skip
        servers["auth"] = start_server(db_url, store, tmp / "auth.log", "--auth")
        yield {"servers": servers, "read_key": read_key, "other_key": other_key}
    finally:
        for s in servers.values():
            stop_server(s)


def test_the_serving_app_answers_predictions_at_its_front_door(sqlite_url, store) -> None:
    """The layering itself: the front door sits on top and reaches the inner fast path
    through the limits and auth checks, which it runs itself."""
    from autotune.api.limits import LimitsMiddleware
    from autotune.auth import AuthMiddleware
    from serving.app import ServingApp, create_serving_app

    app = create_serving_app(db_url=sqlite_url, artifact_dir=str(store), auth=True)
    assert isinstance(app, ServingApp)
    stack = app.build_middleware_stack()
    assert isinstance(stack, FrontDoor) and isinstance(stack.fast, FastPath)
    assert [type(g) for g in stack._gates] == [AuthMiddleware, LimitsMiddleware]


def test_an_unknown_middleware_keeps_the_front_door_shut(sqlite_url, store) -> None:
    """A layer the front door does not know might guard something: predictions then cross the
    whole stack, as before."""
    from starlette.middleware.gzip import GZipMiddleware

    from serving.app import create_serving_app

    app = create_serving_app(db_url=sqlite_url, artifact_dir=str(store))
    app.add_middleware(GZipMiddleware)
    assert not isinstance(app.build_middleware_stack(), FrontDoor)


def test_predict_over_the_body_limit_is_413(world: dict[str, Any], models: Any) -> None:
    url = world["servers"]["limits"].url
    small = json.dumps({"rows": _rows(models, 1)}).encode()
    big = json.dumps({"rows": _rows(models, 50)}).encode()
    assert len(small) < PREDICT_LIMIT < len(big)
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.post("/v1/models/m/predict", content=small).status_code == 200
        for path in ("/v1/models/m/predict", "/v2/models/m/versions/1/infer"):
            for content in (big, _chunked(big)):
                r = c.post(path, content=content)
                assert r.status_code == 413, (path, r.text)
                err = r.json()["error"]
                assert err["code"] == "payload_too_large" and err["details"] == {
                    "limit": PREDICT_LIMIT,
                    "setting": "max_predict_bytes",
                    "field": "body",
                }
        # A chunked body under the limit is answered.
        r = httpx.post(url + "/v1/models/m/predict", content=_chunked(small), timeout=10)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_loopback_clients_are_not_rate_limited_by_default(
    world: dict[str, Any], models: Any
) -> None:
    url = world["servers"]["limits"].url
    body = {"rows": _rows(models, 1)}
    with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": "at_loop"}) as c:
        assert {c.post("/v1/models/m/predict", json=body).status_code for _ in range(10)} == {200}


def test_proxy_headers_are_honoured_on_predict(world: dict[str, Any], models: Any) -> None:
    """uvicorn's proxy-headers layer still runs before the front door: a request relayed by a
    trusted proxy on loopback counts as coming from the forwarded address, which is not
    exempt from the rate limit and gets its own bucket."""
    url = world["servers"]["limits"].url
    body = {"rows": _rows(models, 1)}
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(base_url=url, timeout=10, headers=relayed) as c:
        codes = [c.post("/v1/models/m/predict", json=body).status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
    # The proxy itself (loopback, no forwarded address) is still exempt.
    with httpx.Client(base_url=url, timeout=10) as c:
        assert {c.post("/v1/models/m/predict", json=body).status_code for _ in range(6)} == {200}


def test_a_rate_limited_key_gets_429_with_retry_after_on_predict(
    world: dict[str, Any], models: Any
) -> None:
    url = world["servers"]["loopback_limited"].url
    body = {"rows": _rows(models, 1)}
    with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": "at_k1"}) as c:
        codes = [c.post("/v1/models/m/predict", json=body).status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        r = c.post("/v2/models/m/infer", json={"inputs": []})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        # The buckets are the limits layer's: the same key is limited on other routes too.
        assert c.get("/v1/models").status_code == 429
    # Another key has its own bucket.
    r = httpx.post(url + "/v1/models/m/predict", json=body, headers={"X-API-Key": "at_k2"})
    assert r.status_code == 200


def test_a_request_the_protocol_hands_to_the_asgi_way_is_rate_counted_once(
    world: dict[str, Any], models: Any
) -> None:
    """A prediction the HTTP protocol cannot answer directly (a model not loaded, here one
    that does not exist) goes the ASGI way, which runs the limits again: it must take one
    token from the bucket, not two. Burst 3: three 404s, then 429."""
    url = world["servers"]["loopback_limited"].url
    body = {"rows": _rows(models, 1)}
    with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": "at_once"}) as c:
        codes = [c.post("/v1/models/nope/predict", json=body).status_code for _ in range(4)]
    assert codes == [404, 404, 404, 429], codes


def test_predict_without_a_key_is_401_and_keys_stay_in_their_project(
    world: dict[str, Any], models: Any
) -> None:
    url = world["servers"]["auth"].url
    body = {"rows": _rows(models, 1)}
    for path in ("/v1/models/m/predict", "/v1/models/m/versions/1/predict"):
        r = httpx.post(url + path, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(url + path, json=body, headers={"X-API-Key": "at_unknown"})
        assert r.status_code == 401
    r = httpx.post(url + "/v2/models/m/infer", json={"inputs": []})
    assert r.status_code == 401
    ok = httpx.post(
        url + "/v1/models/m/predict", json=body, headers={"X-API-Key": world["read_key"]}
    )
    assert ok.status_code == 200 and ok.json()["model"] == "m"
    # Another project's key: model m does not exist there, by either path.
    other = {"Authorization": f"Bearer {world['other_key']}"}
    assert httpx.post(url + "/v1/models/m/predict", json=body, headers=other).status_code == 404
    r = httpx.post(url + "/v2/models/m/infer", json={"inputs": []}, headers=other)
    assert r.status_code == 404
    # Only the middleware qualifies names: a qualified name in the path is refused.
    r = httpx.post(url + "/v1/models/default~m/predict", json=body, headers=other)
    assert r.status_code == 404


def test_an_error_inside_the_model_is_a_json_500_without_traceback(
    world: dict[str, Any],
) -> None:
    server = world["servers"]["limits"]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        fine = c.post("/v1/models/nan/predict", json={"rows": [{"a": 1.0, "b": 2.0}]})
        assert fine.status_code == 200 and np.isfinite(fine.json()["predictions"][0])
        # null -> NaN -> scikit-learn raises ValueError inside its predict
        r = c.post("/v1/models/nan/predict", json={"rows": [{"a": None, "b": 2.0}]})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "error": {
                "code": "internal",
                "message": "internal server error; the server log has the details",
                "details": {},
            }
        }
        assert "Traceback" not in r.text and "ValueError" not in r.text
    # The server goes on answering, and its log has the details.
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert (
            c.post("/v1/models/nan/predict", json={"rows": [{"a": 1.0, "b": 2.0}]}).status_code
            == 200
        )
    log = server.log_text()
    assert "unhandled error on POST /v1/models/nan/predict" in log and "NaN" in log


_TRACED = """
import json
import sys
from fastapi.testclient import TestClient
from opentelemetry import trace
from serving.app import create_serving_app

spans = []


class Tracer(trace.NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        spans.append(name)
        return super().start_span(name, *args, **kwargs)


class Provider(trace.TracerProvider):  # a NoOp one would count as unconfigured
    def get_tracer(self, *args, **kwargs):
        return Tracer()


db, store, configure = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
app = create_serving_app(db_url=db, artifact_dir=store)
with TestClient(app) as c:
    if configure:
        trace.set_tracer_provider(Provider())
        app._serving_telemetry_until = float("-inf")  # no waiting out the once-a-second check
    r = c.post("/v1/models/m/predict", json={"rows": [{"f%d" % i: 1.0 for i in range(30)}]})
    assert r.status_code == 200, r.text
print(json.dumps(spans))
"""


@pytest.mark.parametrize("configure", [False, True])
def test_with_a_tracer_provider_predictions_are_traced_by_fastapi(
    sqlite_url: str, store: Any, registry: Any, models: Any, configure: bool
) -> None:
    """The front door skips FastAPI's telemetry check only while OpenTelemetry has no provider:
    once one is configured, predictions go through FastAPI's instrumentation again. (A
    subprocess: a tracer provider can be set once per process.)"""
    import os
    import subprocess
    import sys

    from serving_helpers import REPO

    register(registry, models, "m")
    out = subprocess.run(
        [sys.executable, "-c", _TRACED, sqlite_url, str(store), "1" if configure else "0"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    spans = json.loads(out.stdout.strip().splitlines()[-1])
    if configure:
        assert any("/v1/models/{name}/predict" in s or "POST" in s for s in spans), spans
    else:
        assert spans == []
