"""The prediction fast path (serving/fastpath.py) and the one-callback micro-batcher: same
answers as the routes it stands in front of, errors naming the features, the authorize hook,
chunked bodies, exact metrics, and batches formed per loop turn."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient
from serving_helpers import FEATURES, register

from autotune.errors import PermissionDeniedError
from serving.app import create_serving_app
from serving.batching import BatchingConfig, MicroBatcher
from serving.errors import InvalidInputError
from serving.fastpath import FastPath
from serving.runtime import compile_rows_check
from serving.schemas import Signature


def _app(sqlite_url, store, *, fast: bool = True, batching: bool = True):
    from serving.runtime import ServerConfig

    app = create_serving_app(
        db_url=sqlite_url,
        artifact_dir=str(store),
        config=ServerConfig(batching=BatchingConfig(enabled=batching)),
    )
    if not fast:  # the FastAPI routes alone answer
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    return app


def _expected(models, rows: np.ndarray) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(bytearray(models.small))
    return booster.inplace_predict(rows.astype(np.float32))


def _comparable(r) -> tuple[int, object]:
    body = r.json()
    body.pop("request_id", None)
    if "parameters" in body:
        body["parameters"].pop("request_id", None)
        body.pop("id", None)
    return r.status_code, body


REQUESTS = [
    ("/v1/models/fp/predict", {"rows": "good"}),
    ("/v1/models/fp/versions/1/predict", {"rows": "good"}),
    ("/v1/models/fp/versions/production/predict", {"rows": "good"}),
    ("/v1/models/fp/predict", {"rows": "bad"}),
    ("/v1/models/fp/predict", {"rows": []}),
    ("/v1/models/fp/predict", {"entities": [{"customer": 1}]}),
    ("/v1/models/fp/predict", [1, 2]),
    ("/v1/models/nope/predict", {"rows": "good"}),
    ("/v1/models/fp/versions/canary/predict", {"rows": "good"}),
    ("/v2/models/fp/infer", {"inputs": "tensor"}),
    ("/v2/models/fp/versions/1/infer", {"inputs": "tensor", "id": "r1"}),
    (
        "/v2/models/fp/infer",
        {"inputs": [{"name": "f0", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
    ),  # fmt: skip
    ("/v2/models/fp/infer", {"inputs": "nope"}),
]


def _body(models, spec):
    good = [dict(zip(FEATURES, map(float, models.x[i]), strict=True)) for i in range(3)]
    if isinstance(spec, dict) and spec.get("rows") == "good":
        return {"rows": good}
    if isinstance(spec, dict) and spec.get("rows") == "bad":
        wrong = {**good[0], "f1": "3.5", "f2": True, "extra_a": 1}
        del wrong["f3"]
        return {"rows": [good[1], wrong]}
    if isinstance(spec, dict) and spec.get("inputs") == "tensor":
        x = models.x[:3]
        tensor = {"name": "input-0", "shape": [3, 30], "datatype": "FP64", "data": x.tolist()}
        return {**spec, "inputs": [tensor]}
    return spec


def test_fast_path_answers_as_the_routes_do(sqlite_url, store, registry, models):
    register(registry, models, "fp")
    registry.promote("fp", 1)
    answers = {}
    for fast in (True, False):
        with TestClient(_app(sqlite_url, store, fast=fast)) as c:
            answers[fast] = [
                _comparable(c.post(path, json=_body(models, spec))) for path, spec in REQUESTS
            ]
            r = c.post(REQUESTS[0][0], content=b"{not json")
            answers[fast].append((r.status_code, r.json()["error"]["code"]))
    assert answers[True] == answers[False]
    got = dict(zip((p for p, _ in REQUESTS), answers[True], strict=False))
    status, body = got["/v1/models/fp/versions/production/predict"]
    assert status == 200 and (body["version"], body["alias"]) == (1, "production")
    np.testing.assert_allclose(body["predictions"], _expected(models, models.x[:3]), rtol=1e-6)
    status, body = answers[True][3]
    assert status == 422 and body["error"]["details"]["missing"] == ["f3"]
    assert body["error"]["details"]["extra"] == ["extra_a"]
    wrong = [(w["feature"], w["row"], w["got"]) for w in body["error"]["details"]["wrong_type"]]
    assert wrong == [("f1", 1, "string"), ("f2", 1, "bool")]
    assert answers[True][7][0] == 404 and answers[True][8][0] == 404
    status, body = answers[True][10]
    assert status == 200 and body["model_version"] == "1" and body["outputs"][0]["shape"] == [3]
    assert answers[True][-1] == (422, "invalid_argument")


def test_other_requests_go_on_to_the_app(sqlite_url, store, registry, models):
    register(registry, models, "fp")
    with TestClient(_app(sqlite_url, store)) as c:
        r = c.post("/v1/models/fp/predict/extra", json={"rows": []})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/v1/models/fp/predict").status_code == 405
        assert c.get("/v1/models/fp").json()["name"] == "fp"
        paths = c.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{ref}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert "post" in paths[p], p


def test_match_takes_one_segment_per_parameter():
    fp = FastPath(None, None, v1_prefix="/api/v1")  # type: ignore[arg-type]
    assert fp.match("/api/v1/models/m.1-x/predict")[1:] == ("m.1-x", None)
    assert fp.match("/api/v1/models/m/versions/prod/predict")[1:] == ("m", "prod")
    assert fp.match("/v2/models/m/versions/3/infer")[1:] == ("m", "3")
    for path in ("/api/v1/models//predict", "/api/v1/models/a/b/predict", "/v1/models/m/predict",
                 "/v2/models/m/versions//infer", "/v2/models/m/infer/", "/api/v1/models/predict"):  # fmt: skip
        assert fp.match(path) is None, path


def test_authorize_hook_refuses_before_reading_the_model(sqlite_url, store, registry, models):
    register(registry, models, "open")
    register(registry, models, "secret")
    app = _app(sqlite_url, store)
    seen: list[str] = []

    async def authorize(scope, name):
        seen.append(name)
        if name == "secret":
            raise PermissionDeniedError(f"no access to model {name!r}")

    rows = {"rows": models.examples}
    with TestClient(app) as c:
        app.state.model_server.authorize = authorize
        assert c.post("/v1/models/open/predict", json=rows).status_code == 200
        r = c.post("/v1/models/secret/predict", json=rows)
        assert r.status_code == 403 and "secret" in r.json()["error"]["message"]
        app.state.model_server.authorize = lambda scope, name: None  # a synchronous one
        assert c.post("/v2/models/secret/infer", json={"inputs": []}).status_code == 422
    assert seen == ["open", "secret"]


def test_chunked_body_and_exact_metrics(sqlite_url, store, registry, models):
    register(registry, models, "m")
    app = _app(sqlite_url, store)
    body = ('{"rows": [' + ",".join(
        "{" + ",".join(f'"{f}": {float(v)}' for f, v in zip(FEATURES, models.x[i], strict=True))
        + "}" for i in range(5)
    ) + "]}").encode()  # fmt: skip

    def chunks():
        yield from (body[i : i + 100] for i in range(0, len(body), 100))

    with TestClient(app) as c:
        r = c.post("/v1/models/m/predict", content=chunks())
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], _expected(models, models.x[:5]),
                                   rtol=1e-6)  # fmt: skip
        for _ in range(6):
            assert c.post("/v1/models/m/predict", json={"rows": models.examples}).status_code == 200
        assert c.post("/v1/models/m/predict", json={"rows": [{}]}).status_code == 422
        text = c.get("/metrics").text

    def value(pattern: str) -> float:
        m = re.search(pattern + r" (\S+)", text)
        assert m, pattern
        return float(m.group(1))

    ok = '{alias="",code="200",endpoint="v1_predict",model="m",version="1"}'
    assert value(re.escape("autotune_serving_requests_total" + ok)) == 7
    assert value(re.escape('autotune_serving_rows_total{alias="",model="m",version="1"}')) == 29
    lat = '{alias="",endpoint="v1_predict",model="m",version="1"}'
    # The latency histogram counts every request that resolved the model, failed ones too.
    assert value(re.escape("autotune_serving_request_duration_seconds_count" + lat)) == 8
    bad = '{alias="",code="422",endpoint="v1_predict",model="m",version="1"}'
    assert value(re.escape("autotune_serving_errors_total" + bad)) == 1


def test_compiled_check_matches_the_signature():
    sig = Signature.from_names(["a", "b", "c"])
    check = compile_rows_check(sig)
    rows = [{"a": 1, "b": 2.5, "c": -3.0}, {"c": 0.0, "b": 1, "a": 7}]
    np.testing.assert_array_equal(check(rows), sig.to_matrix(rows))
    np.testing.assert_array_equal(check(rows[:1]), sig.to_matrix(rows[:1]))
    assert check(rows).dtype == np.float32 and check(rows).shape == (2, 3)
    for bad in ([{"a": 1, "b": 2}], [{"a": 1, "b": 2, "c": "3"}], [{"a": 1, "b": 2, "c": True}],
                [{"a": 1, "b": 2, "d": 3}], [[1, 2, 3]], [], "rows",
                [{"a": 1, "b": 2, "c": 3}, {"a": None, "b": 2, "c": 3}]):  # fmt: skip
        with pytest.raises(InvalidInputError) as fast:
            check(bad)
        with pytest.raises(InvalidInputError) as full:
            sig.to_matrix(bad)
        assert str(fast.value) == str(full.value) and fast.value.details == full.value.details
    typed = Signature(inputs=[{"name": "n", "type": "int"}, {"name": "z", "nullable": True}])
    assert compile_rows_check(typed) == typed.to_matrix  # the general check, unchanged
    one = compile_rows_check(Signature.from_names(["x"]))
    np.testing.assert_array_equal(one([{"x": 2}, {"x": 3.5}]), [[2.0], [3.5]])


def test_batcher_makes_one_model_call_per_loop_turn():
    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x[:, 0] * 2

    async def burst(b: MicroBatcher, n: int) -> list[np.ndarray]:
        xs = [np.full((1, 2), i, dtype=np.float32) for i in range(n)]
        return await asyncio.gather(*(b.predict(x) for x in xs))

    async def main() -> None:
        b = MicroBatcher(predict, BatchingConfig(max_batch_size=16))
        out = await burst(b, 40)  # all queued in one turn of the loop: 16 + 16 + 8
        assert [float(o[0]) for o in out] == [2.0 * i for i in range(40)]
        assert calls == [16, 16, 8]
        calls.clear()
        big = np.ones((20, 2), np.float32)  # larger than the batch limit: a call of its own
        two = await asyncio.gather(b.predict(big), b.predict(np.ones((3, 2), np.float32)))
        assert [len(t) for t in two] == [20, 3] and calls == [20, 3]
        calls.clear()
        waiting = MicroBatcher(predict, BatchingConfig(max_batch_size=64, max_wait_ms=50))

        async def late(i: int) -> np.ndarray:
            await asyncio.sleep(0.005 * i)  # arrive over 25 ms: within the wait
            return await waiting.predict(np.full((1, 2), i, dtype=np.float32))

        await asyncio.gather(*(late(i) for i in range(6)))
        assert calls == [6]
        calls.clear()
        cancelled = asyncio.ensure_future(b.predict(np.zeros((1, 2), np.float32)))
        kept = asyncio.ensure_future(b.predict(np.ones((1, 2), np.float32)))
        cancelled.cancel()  # before the flush runs
        assert float((await kept)[0]) == 2.0 and calls == [1]  # the cancelled one dropped out

    asyncio.run(main())
