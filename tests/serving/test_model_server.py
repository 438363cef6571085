"""The model server over HTTP: a real uvicorn subprocess on a loopback port (SQLite)."""

from __future__ import annotations

import base64
import pickle
import threading
import time

import numpy as np
import pytest
import xgboost as xgb
from serving_helpers import FEATURES, register

pytestmark = pytest.mark.slow


def _expected(models, which: str, rows: np.ndarray) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(bytearray(getattr(models, which)))
    return booster.inplace_predict(rows.astype(np.float32))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _register_body(data: bytes, **kw):
    return {
        "artifact_base64": _b64(data),
        "format": "xgboost-ubj",
        "signature": {"inputs": [{"name": f} for f in FEATURES]},
        **kw,
    }


def test_register_promote_predict_rollback(live, models):
    server, _reg, tmp = live
    rows = [dict(zip(FEATURES, map(float, models.x[i]), strict=True)) for i in range(5)]
    with server.client() as c:
        r = c.post(
            "/v1/models/rest/versions",
            json=_register_body(models.small, metrics={"auc": 0.9}, input_example=rows[:2],
                                lineage={"study": "s", "trial": 1}),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1
        (tmp / "imports").mkdir(exist_ok=True)
        (tmp / "imports" / "model.ubj").write_bytes(models.large)
        body = {k: v for k, v in _register_body(models.large).items() if k != "artifact_base64"}
        r = c.post(
            "/v1/models/rest/versions",
            json={**body, "artifact_path": str(tmp / "imports" / "model.ubj")},
        )
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 2
        r = c.post("/v1/models/rest/versions", json={**body, "artifact_path": "/etc/passwd"})
        assert r.status_code == 422 and "outside" in r.json()["error"]["message"]

        # No production alias yet: the latest version answers.
        r = c.post("/v1/models/rest/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2 and r.json()["alias"] is None
        np.testing.assert_allclose(
            r.json()["predictions"], _expected(models, "large", models.x[:5]), rtol=1e-6
        )

        r = c.put("/v1/models/rest/aliases/production", json={"version": 1, "reason": "first"})
        assert r.status_code == 200 and r.json()["to_version"] == 1
        got = c.post("/v1/models/rest/predict", json={"rows": rows}).json()
        assert (got["version"], got["alias"]) == (1, "production")
        np.testing.assert_allclose(
            got["predictions"], _expected(models, "small", models.x[:5]), rtol=1e-6
        )
        r = c.put("/v1/models/rest/aliases/production", json={"version": 2, "expected_version": 3})
        assert r.status_code == 409 and r.json()["error"]["code"] == "alias_conflict"
        c.put("/v1/models/rest/aliases/production", json={"version": 2, "expected_version": 1})
        assert c.post("/v1/models/rest/predict", json={"rows": rows}).json()["version"] == 2
        r = c.post("/v1/models/rest/aliases/production/rollback", json={"actor": "ops"})
        assert r.status_code == 200 and (r.json()["from_version"], r.json()["to_version"]) == (2, 1)
        assert c.post("/v1/models/rest/predict", json={"rows": rows}).json()["version"] == 1

        # A version number or an alias in the path.
        assert (
            c.post("/v1/models/rest/versions/2/predict", json={"rows": rows}).json()["version"] == 2
        )
        got = c.post("/v1/models/rest/versions/production/predict", json={"rows": rows}).json()
        assert got["alias"] == "production" and got["version"] == 1

        hist = c.get("/v1/models/rest/aliases/production/history").json()["events"]
        assert [(e["from_version"], e["to_version"]) for e in hist] == [(2, 1), (1, 2), (None, 1)]
        assert hist[0]["actor"] == "ops"
        newest = c.get("/v1/models/rest/history", params={"limit": 2}).json()["events"]
        assert [(e["from_version"], e["to_version"]) for e in newest] == [(2, 1), (1, 2)]
        # A limit outside 1..1000 is refused, naming the field, not quietly clamped.
        for path in ("/v1/models/rest/history", "/v1/models/rest/aliases/production/history"):
            for bad in (0, 1001, "many"):
                r = c.get(path, params={"limit": bad})
                assert r.status_code == 422, (path, bad, r.text)
                assert r.json()["error"]["details"]["field"] == "limit", r.text
        listing = c.get("/v1/models").json()["models"]
        assert {"name": "rest", "versions": [1, 2], "aliases": {"production": 1}}.items() <= next(
            m for m in listing if m["name"] == "rest"
        ).items()
        detail = c.get("/v1/models/rest").json()
        assert detail["model_versions"][1]["lineage"]["study"] == "s"
        r = c.post(
            "/v1/models/rest/versions/2/promote-if-better",
            json={"metric": "auc", "direction": "maximize"},
        )
        assert r.status_code == 422  # v2 was registered without the metric


def test_register_refuses_overlong_strings_naming_the_field(live, models):
    """Each string of a registration is bounded like its column: a 422 naming the field, and
    no version is created."""
    server, reg, _ = live
    with server.client() as c:
        for field, value in [
            ("actor", "a" * 257),
            ("format", "x" * 33),
            ("description", "d" * 10_001),
            ("artifact_path", "/p" * 2049),
        ]:
            body = _register_body(models.small, **{field: value})
            r = c.post("/v1/models/overlong/versions", json=body)
            assert r.status_code == 422, (field, r.text)
            assert r.json()["error"]["details"]["field"] == field, r.text
        r = c.get("/v1/models/overlong")
        assert r.status_code == 404, r.text


def test_bad_payloads_name_the_offending_features(live, models):
    server, reg, _ = live
    register(reg, models, "bad")
    good = dict(models.examples[0])
    with server.client() as c:
        wrong = {**good, "f1": "3.5", "f2": True, "extra_a": 1, "extra_b": 2}
        del wrong["f3"], wrong["f4"]
        r = c.post("/v1/models/bad/predict", json={"rows": [good, wrong]})
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "invalid_input"
        assert err["details"]["missing"] == ["f3", "f4"]
        assert err["details"]["extra"] == ["extra_a", "extra_b"]
        assert [(w["feature"], w["row"], w["got"]) for w in err["details"]["wrong_type"]] == [
            ("f1", 1, "string"),
            ("f2", 1, "bool"),
        ]
        for name in ("f3", "f4", "extra_a", "extra_b", "'f1'", "'f2'"):
            assert name in err["message"]

        cases = [
            (b"{not json", 422, "invalid_argument"),
            (b'{"rows": []}', 422, "invalid_input"),
            (b'{"rows": [1, 2]}', 422, "invalid_input"),
            (b'{"rows": [{}], "entities": [{}]}', 422, "invalid_input"),
            (b'{"entities": [{"customer": 1}]}', 422, "invalid_argument"),
            (b"[1, 2]", 422, "invalid_input"),
        ]
        for body, status, code in cases:
            r = c.post("/v1/models/bad/predict", content=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
        r = c.post("/v1/models/nope/predict", json={"rows": [good]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = c.post("/v1/models/bad/versions/9/predict", json={"rows": [good]})
        assert r.status_code == 404
        r = c.post("/v1/models/bad/versions/canary/predict", json={"rows": [good]})
        assert r.status_code == 404 and "canary" in r.json()["error"]["message"]

        r = c.post(
            "/v1/models/bad/versions",
            json=_register_body(pickle.dumps({"evil": 1}), format="xgboost-ubj"),
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_artifact"
        r = c.post("/v1/models/bad/versions", json=_register_body(models.small, format="pickle"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_artifact"
        r = c.post("/v2/models/bad/infer", json={"inputs": [{"name": "f0", "shape": [1],
                                                             "datatype": "FP32", "data": [1.0]}]})  # fmt: skip
        assert r.status_code == 422 and "f29" in r.json()["error"]["details"]["missing"]


def test_open_inference_protocol(live, models):
    server, reg, _ = live
    register(reg, models, "oip")
    x = models.x[:3]
    expected = _expected(models, "small", x)
    with server.client() as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        meta = c.get("/v2/models/oip").json()
        assert meta["name"] == "oip" and meta["versions"] == ["1"]
        assert meta["inputs"][0] == {"name": "f0", "datatype": "FP32", "shape": [-1]}
        assert c.get("/v2/models/oip/versions/1/ready").json()["ready"] is True
        tensor = {"name": "input-0", "shape": [3, 30], "datatype": "FP64", "data": x.tolist()}
        r = c.post("/v2/models/oip/infer", json={"id": "req-1", "inputs": [tensor]})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == "oip" and out["model_version"] == "1" and out["id"] == "req-1"
        assert out["outputs"][0]["shape"] == [3]
        np.testing.assert_allclose(out["outputs"][0]["data"], expected, rtol=1e-6)
        per_feature = [
            {"name": f, "shape": [3], "datatype": "FP32", "data": x[:, j].tolist()}
            for j, f in enumerate(FEATURES)
        ]
        r = c.post("/v2/models/oip/versions/1/infer", json={"inputs": per_feature})
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected, rtol=1e-6)
        bad = {**tensor, "shape": [2, 30]}
        assert c.post("/v2/models/oip/infer", json={"inputs": [bad]}).status_code == 422


def test_metrics_request_ids_and_sampled_prediction_log(live, models):
    server, reg, _ = live
    register(reg, models, "obs")
    reg.promote("obs", 1, "production")
    with server.client() as c:
        deadline = time.monotonic() + 5
        while (
            c.post("/v1/models/obs/predict", json={"rows": models.examples}).json().get("alias")
            != "production"
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        r = c.post(
            "/v1/models/obs/predict",
            json={"rows": models.examples},
            headers={"x-request-id": "trace-42"},
        )
        assert r.headers["x-request-id"] == "trace-42" and r.json()["request_id"] == "trace-42"
        c.post("/v1/models/obs/predict", json={"rows": [{}]})
        text = c.get("/metrics").text
    assert (
        'autotune_serving_requests_total{alias="production",code="200",endpoint="v1_predict",'
        'model="obs",version="1"}' in text
    )
    assert 'autotune_serving_errors_total{alias="",code="422"' in text
    assert 'autotune_serving_request_duration_seconds_bucket{alias="production"' in text
    assert "autotune_serving_batch_size_bucket" in text
    deadline = time.monotonic() + 5
    while '"request_id": "trace-42"' not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '"request_id": "trace-42"' in server.log_text()


def test_hot_swap_under_steady_load_fails_no_request(live, models):
    """Alias moves made by another process (this one) are picked up by polling, while four
    threads keep predicting; every request succeeds and both versions answer."""
    server, reg, _ = live
    register(reg, models, "swap", which="small")
    register(reg, models, "swap", which="large")
    reg.promote("swap", 1)
    rows = {"rows": models.examples[:2]}
    with server.client() as c:  # wait until the server sees production
        deadline = time.monotonic() + 5
        while c.post("/v1/models/swap/predict", json=rows).json()["alias"] != "production":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(4)]
    errors: list[str] = []

    def hammer(i: int) -> None:
        with server.client() as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/models/swap/predict", json=rows)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")
                    else:
                        seen[i].append(r.json()["version"])
                except Exception as e:  # a dropped connection is a failure too
                    errors.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        reg.promote("swap", 2, reason="hot swap")
        time.sleep(1.2)
        reg.rollback("swap")
        time.sleep(1.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    allv = [v for s in seen for v in s]
    assert len(allv) > 50 and set(allv) == {1, 2}
    for s in seen:  # each client sees 1 ... 2 ... 1, never flapping
        changes = [b for a, b in zip(s, s[1:], strict=False) if a != b]
        assert changes == [2, 1], changes


def test_a_corrupt_new_version_is_not_swapped_in(live, models):
    """The server verifies the artifact before swapping: the old version keeps answering."""
    server, reg, _ = live
    register(reg, models, "guard", which="small")
    v2 = register(reg, models, "guard", which="small_json")
    reg.promote("guard", 1)
    rows = {"rows": models.examples}
    with server.client() as c:  # wait until the poller has swapped production to v1
        deadline = time.monotonic() + 5
        while c.get("/v1/serving/status").json()["aliases"].get("guard:production") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    path = reg.store.path_of(v2.artifact.sha256)
    path.write_bytes(path.read_bytes().replace(b"learner", b"LEARNER", 1))
    reg.promote("guard", 2)
    with server.client() as c:
        deadline = time.monotonic() + 5
        while "guard:2" not in c.get("/v1/serving/status").json()["failed_loads"]:
            assert time.monotonic() < deadline, c.get("/v1/serving/status").json()
            time.sleep(0.05)
        got = c.post("/v1/models/guard/predict", json=rows)
        assert got.status_code == 200 and got.json()["version"] == 1
        r = c.post("/v1/models/guard/versions/2/predict", json=rows)
        assert r.status_code == 500 and r.json()["error"]["code"] == "artifact_corrupt"
    assert "not swapping guard:production to v2" in server.log_text()
