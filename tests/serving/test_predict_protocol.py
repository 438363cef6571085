"""serving.httpproto.PredictHttpToolsProtocol on a real uvicorn server on loopback: prediction
requests are answered without an ASGI cycle, and give the same answers as the ASGI way (which
answers everything else, and whatever needs waiting for); HTTP's keep-alive, pipelining,
``Connection: close``, HTTP/1.0 and the keep-alive timeout behave as uvicorn's own protocol."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from serving_helpers import FEATURES, register

from autotune.auth import KeyStore
from autotune.storage import Database, upgrade
from serving.httpproto import PredictHttpToolsProtocol
from serving.launch import uvicorn_options

pytest.importorskip("httptools")


class CountingSet(set):  # type: ignore[type-arg]
    """uvicorn's set of ASGI tasks, counting what is added: one per ASGI cycle."""

    added = 0

    def add(self, item: Any) -> None:
        self.added += 1
        super().add(item)


class Live:
    def __init__(self, app: Any, **config: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        opts = {**uvicorn_options(), **config}
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **opts)
        )
        self.tasks = CountingSet()
        self.server.server_state.tasks = self.tasks
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def raw(self, data: bytes, *, until_close: bool = False, responses: int = 1) -> bytes:
        """Send ``data`` on a new connection; read ``responses`` whole responses (or all
        until the server closes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
                if not until_close and len(_split(out)) >= responses:
                    return out


def _split(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Whole responses in ``data``: (status line, headers, body)."""
    out = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        n = int(headers.get(b"content-length", b"0"))
        if len(rest) < n:
            break
        out.append((lines[0], headers, rest[:n]))
        data = rest[n:]
    return out


def _post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: t", f"Content-Length: {len(body)}",
            "Content-Type: application/json", *extra]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _rows(models: Any, i: int, n: int = 1) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, models.x[(i + k) % 50]), strict=True)) for k in range(n)]


@pytest.fixture
def live(sqlite_url: str, store: Any, registry: Any, models: Any) -> Iterator[Live]:
    from serving.app import create_serving_app

    register(registry, models, "m")
    registry.promote("m", 1)
    server = Live(create_serving_app(db_url=sqlite_url, artifact_dir=str(store)))
    try:
        yield server
    finally:
        server.stop()


def test_uvicorn_runs_the_prediction_protocol() -> None:
    assert uvicorn_options()["http"] is PredictHttpToolsProtocol


def test_predictions_are_answered_without_an_asgi_cycle(live: Live, models: Any) -> None:
    booster_rows = _rows(models, 0, 3)
    with httpx.Client(base_url=live.url, timeout=10) as c:
        c.get("/v2/health/ready")  # the app's middleware stack is built on a first request
        before = live.tasks.added
        for i in range(20):
            r = c.post("/v1/models/m/predict", json={"rows": _rows(models, i)})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 1
            assert r.headers["content-type"] == "application/json"
            assert r.headers["x-request-id"] == r.json()["request_id"]
        r = c.post("/v1/models/m/predict", json={"rows": booster_rows})
        v2 = c.post(
            "/v2/models/m/infer",
            json={"inputs": [{"name": "x", "shape": [3, 30], "datatype": "FP32",
                              "data": [[r[f] for f in FEATURES] for r in booster_rows]}]},
        )  # fmt: skip
        assert v2.status_code == 200
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], r.json()["predictions"])
        assert live.tasks.added == before  # not one ASGI cycle
        assert c.get("/v1/models").status_code == 200  # anything else is one
        assert live.tasks.added == before + 1
    assert live.server.server_state.total_requests >= 23


def test_the_asgi_way_gives_the_same_answers(live: Live, models: Any) -> None:
    """A chunked body goes the ASGI way (through the front door and the fast path): the same
    status, headers and body as the direct answer, for an answer and for each kind of error."""
    cases = [
        json.dumps({"rows": _rows(models, 1, 2)}).encode(),
        b"{not json",
        json.dumps({"rows": [{"f0": 1.0}]}).encode(),  # 29 features missing
        json.dumps({"rows": [{**_rows(models, 0)[0], "f1": "x"}]}).encode(),
        json.dumps({"rows": []}).encode(),
    ]
    live.raw(_post("/v2/health/ready", b""))  # builds the app's middleware stack
    statuses = []
    for body in cases:
        rid = "X-Request-ID: fixed-id"
        direct = live.raw(_post("/v1/models/m/predict", body, rid))
        added = live.tasks.added
        chunked = (
            (
                "POST /v1/models/m/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                f"{rid}\r\n\r\n{len(body):x}\r\n"
            ).encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        via_asgi = live.raw(chunked)
        assert live.tasks.added == added + 1
        (s1, h1, b1), (s2, h2, b2) = _split(direct)[0], _split(via_asgi)[0]
        h1.pop(b"date"), h2.pop(b"date")
        assert (s1, h1, b1) == (s2, h2, b2), body
        assert b"Traceback" not in b1
        statuses.append(int(s1.split(b" ")[1]))
    assert statuses == [200, 422, 422, 422, 422]


def test_pipelined_requests_are_answered_in_order(live: Live, models: Any) -> None:
    bodies = [json.dumps({"rows": _rows(models, i)}).encode() for i in range(3)]
    data = (
        _post("/v1/models/m/predict", bodies[0])
        + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
        + _post("/v1/models/m/predict", bodies[1])
        + _post("/v1/models/nope/predict", bodies[2])  # not loaded: the ASGI way
        + _post("/v1/models/m/predict", bodies[2])
    )
    got = _split(live.raw(data, responses=5))
    assert [g[0].split(b" ")[1] for g in got] == [b"200", b"200", b"200", b"404", b"200"]
    single = [
        json.loads(_split(live.raw(_post("/v1/models/m/predict", b)))[0][2])["predictions"]
        for b in bodies
    ]
    assert json.loads(got[0][2])["predictions"] == single[0]
    assert json.loads(got[1][2]) == {"live": True}
    assert json.loads(got[2][2])["predictions"] == single[1]
    assert json.loads(got[4][2])["predictions"] == single[2]


def test_connection_close_and_http_1_0_close_after_the_answer(live: Live, models: Any) -> None:
    body = json.dumps({"rows": _rows(models, 0)}).encode()
    for data in (
        _post("/v1/models/m/predict", body, "Connection: close"),
        _post("/v1/models/m/predict", body, version="1.0"),
    ):
        out = live.raw(data, until_close=True)  # returns once the server closed
        ((status, headers, answer),) = _split(out)
        assert status.startswith(b"HTTP/1.1 200") and headers[b"connection"] == b"close"
        assert len(json.loads(answer)["predictions"]) == 1


def test_idle_connections_close_after_the_keep_alive_timeout(
    sqlite_url: str, store: Any, registry: Any, models: Any
) -> None:
    from serving.app import create_serving_app

    register(registry, models, "m")
    live = Live(create_serving_app(db_url=sqlite_url, artifact_dir=str(store)),
                timeout_keep_alive=1)  # fmt: skip
    body = json.dumps({"rows": _rows(models, 0)}).encode()
    try:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            # Busy for 2.4 s, past the timeout: requests 0.4 s apart keep it open.
            for _ in range(6):
                s.sendall(_post("/v1/models/m/predict", body))
                got = b""
                while not _split(got):
                    got += s.recv(65536)
                assert _split(got)[0][0].startswith(b"HTTP/1.1 200")
                time.sleep(0.4)
            # Then idle: closed about a second after the last answer.
            t = time.monotonic()
            assert s.recv(65536) == b""
            assert 0.3 < time.monotonic() - t < 3.0
    finally:
        live.stop()


def test_clients_that_leave_before_the_answer_do_no_harm(live: Live, models: Any) -> None:
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = errors.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "autotune", "asyncio")]
    for lg in loggers:
        lg.addHandler(handler)
    body = json.dumps({"rows": _rows(models, 0)}).encode()
    try:
        for i in range(30):
            with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
                if i % 2:  # reset at once, rather than a graceful close
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(_post("/v1/models/m/predict", body))
        with httpx.Client(base_url=live.url, timeout=10) as c:
            r = c.post("/v1/models/m/predict", content=body)
            assert r.status_code == 200
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert [e.getMessage() for e in errors] == []


def test_a_key_not_in_the_cache_goes_the_asgi_way_once(
    sqlite_url: str, store: Any, registry: Any, models: Any
) -> None:
    """With API keys on, a key's first request is verified in a thread (the ASGI way); from
    then on its predictions are answered directly, and refusals are the same either way."""
    from serving.app import create_serving_app

    register(registry, models, "m")
    db = Database(sqlite_url)
    upgrade(db)
    _, key = KeyStore(db).create(project="default", scope="read")
    db.dispose()
    live = Live(create_serving_app(db_url=sqlite_url, artifact_dir=str(store), auth=True))
    body = {"rows": _rows(models, 0)}
    try:
        with httpx.Client(base_url=live.url, timeout=10) as c:
            assert c.get("/v2/health/live").status_code == 200
            none = c.post("/v1/models/m/predict", json=body)
            assert none.status_code == 401 and none.json()["error"]["code"] == "unauthenticated"
            n = live.tasks.added
            auth = {"Authorization": f"Bearer {key}"}
            assert c.post("/v1/models/m/predict", json=body, headers=auth).status_code == 200
            assert live.tasks.added == n + 1  # verified in a thread, the ASGI way
            for _ in range(5):
                assert c.post("/v1/models/m/predict", json=body, headers=auth).status_code == 200
            assert live.tasks.added == n + 1  # cached: answered directly
            bad = c.post("/v1/models/m/predict", json=body, headers={"X-API-Key": "at_nope"})
            assert bad.status_code == 401
    finally:
        live.stop()
