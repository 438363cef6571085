"""Request limits (autotune/api/limits.py): each answers 413, 422 or 429 with the project's error
body naming the field and the bound, and a refused request stores nothing.

Against real ``autotune serve`` processes on loopback (SQLite files): one with a small body
limit, one with a small per-key rate that also applies to loopback clients.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotune.api.limits import (
    MAX_CLIENT_ID,
    MAX_KEY,
    MAX_METRICS,
    MAX_PAGE,
    MAX_SUGGEST,
    LimitSettings,
    TokenBuckets,
)
from autotune.models import MAX_METADATA_BYTES, MAX_OBJECTIVES, MAX_STUDY_NAME
from autotune.space import MAX_CHOICES, MAX_PARAMS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
BODY_LIMIT = 256 * 1024
UPLOAD_LIMIT = 512 * 1024
MODEL = "limits-model"
FEATURES = ["f0", "f1", "f2"]
MAX_ROWS = 10_000  # serving.runtime.MAX_ROWS
# The first write imports and warms up a lot on a loaded machine: be patient.
http = httpx.Client(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp: Path, env_extra: dict[str, str]) -> Iterator[str]:
    db_url = f"sqlite:///{tmp / 'autotune.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    env.update(PYTHONPATH=str(REPO), AUTOTUNE_MODEL_STORE=str(tmp / "artifacts"), **env_extra)
    port = _free_port()
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url,
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _register_model(tmp: Path) -> None:
    import numpy as np
    import xgboost as xgb

    from serving.registry import ModelRegistry

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, len(FEATURES)))
    d = xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=FEATURES)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, d, 2)
    reg = ModelRegistry(f"sqlite:///{tmp / 'autotune.db'}", store=str(tmp / "artifacts"))
    try:
        reg.register(
            MODEL,
            artifact=bytes(booster.save_raw("ubj")),
            format="xgboost-ubj",
            signature=FEATURES,
            input_example=[dict(zip(FEATURES, map(float, x[0]), strict=True))],
        )
    finally:
        reg.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a 256 KiB body limit for the tuning API and 512 KiB for uploads, a
    registered model, no rate limit."""
    tmp = tmp_path_factory.mktemp("limits")
    _register_model(tmp)
    env = {
        "AUTOTUNE_MAX_BODY_BYTES": str(BODY_LIMIT),
        "AUTOTUNE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    }
    yield from _serve(tmp, env)


@pytest.fixture(scope="module")
def rate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server allowing bursts of 3 requests, then one every 2 s, per key, loopback included."""
    tmp = tmp_path_factory.mktemp("limits_rate")
    env = {
        "AUTOTUNE_RATE_LIMIT": "0.5",
        "AUTOTUNE_RATE_BURST": "3",
        "AUTOTUNE_RATE_LIMIT_LOOPBACK": "1",
    }
    yield from _serve(tmp, env)


def _spec(name: str, **changes: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "objectives": {"loss": "minimize"},
    }
    return {**spec, **changes}


def _error(r: httpx.Response, status: int, code: str, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["details"]["field"] == field, err
    return err


def _study_count(url: str) -> int:
    return http.get(f"{url}/v1/studies", params={"limit": MAX_PAGE}).json()["total"]


# ------------------------------------------------------------------------------- body size


def test_oversized_body_is_413_naming_the_limit_and_nothing_is_stored(server: str) -> None:
    before = _study_count(server)
    spec = _spec("too-big", metadata={"blob": "x" * BODY_LIMIT})
    r = http.post(f"{server}/v1/studies", json=spec)
    err = _error(r, 413, "payload_too_large", "body")
    assert str(BODY_LIMIT) in err["message"] and "AUTOTUNE_MAX_BODY_BYTES" in err["message"]
    assert err["details"]["limit"] == BODY_LIMIT
    assert http.get(f"{server}/v1/studies/too-big").status_code == 404
    assert _study_count(server) == before


def test_chunked_oversized_body_is_413_and_nothing_is_stored(server: str) -> None:
    body = json.dumps(_spec("too-big-chunked", metadata={"blob": "x" * BODY_LIMIT})).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        for i in range(0, len(body), 16 * 1024):
            yield body[i : i + 16 * 1024]

    r = http.post(
        f"{server}/v1/studies", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(r, 413, "payload_too_large", "body")
    assert http.get(f"{server}/v1/studies/too-big-chunked").status_code == 404


def test_chunked_body_under_the_limit_reaches_the_route(server: str) -> None:
    body = json.dumps(_spec("chunked-ok")).encode()
    r = http.post(
        f"{server}/v1/studies",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "chunked-ok"


def test_predict_has_its_own_larger_body_limit(server: str) -> None:
    rows = [dict.fromkeys(FEATURES, 0.5)] * 5_000  # ~150 KB: over nothing, under both limits
    r = http.post(f"{server}/v1/models/{MODEL}/predict", json={"rows": rows * 2})
    assert r.status_code == 200, r.text  # 300 KB: above the tuning API's limit, still served
    assert len(r.json()["predictions"]) == 10_000


def test_ingestion_has_the_upload_limit_and_an_oversized_batch_stores_no_row(server: str) -> None:
    group = {
        "name": "limits_group",
        "entities": [{"name": "id", "dtype": "int"}],
        "event_time": "ts",
        "features": [{"name": "note", "dtype": "string"}],
    }
    assert http.post(f"{server}/v1/feature-groups", json=group).status_code == 201

    def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
        return [{"id": start + i, "ts": "2030-01-01T00:00:00Z", "note": "n" * 90} for i in range(n)]

    url = f"{server}/v1/feature-groups/limits_group"
    big = {"rows": rows(6000)}  # ~700 KB: over the upload limit
    r = http.post(f"{url}/ingest", json=big)
    err = _error(r, 413, "payload_too_large", "body")
    assert err["details"] == {"field": "body", "limit": UPLOAD_LIMIT, "setting": "max_upload_bytes"}
    found = http.post(f"{url}/online", json={"entities": [{"id": 0}, {"id": 5999}]}).json()
    assert [row["status"] for row in found["rows"]] == ["missing", "missing"]

    # 350 KB: over the tuning API's limit, under the upload limit: ingested.
    r = http.post(f"{url}/ingest", json={"rows": rows(3000)})
    assert r.status_code == 200 and r.json()["accepted"] == 3000, r.text


def test_rows_per_predict_request_are_bounded(server: str) -> None:
    rows = [dict.fromkeys(FEATURES, 0.5)] * (MAX_ROWS + 1)
    r = http.post(f"{server}/v1/models/{MODEL}/predict", json={"rows": rows})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert str(MAX_ROWS) in err["message"] and err["details"]["field"] == "rows"


# ----------------------------------------------------------------------- counts and lengths


def test_suggest_count_is_bounded_and_nothing_is_handed_out(server: str) -> None:
    http.post(f"{server}/v1/studies", json=_spec("count-bound")).raise_for_status()
    r = http.post(f"{server}/v1/studies/count-bound/suggest", json={"count": MAX_SUGGEST + 1})
    err = _error(r, 422, "invalid_argument", "count")
    assert str(MAX_SUGGEST) in err["message"]
    assert http.get(f"{server}/v1/studies/count-bound/trials").json()["total"] == 0


def test_page_size_is_bounded(server: str) -> None:
    r = http.get(f"{server}/v1/studies", params={"limit": MAX_PAGE + 1})
    err = _error(r, 422, "invalid_argument", "limit")
    assert str(MAX_PAGE) in err["message"]


@pytest.mark.parametrize(
    ("changes", "field", "bound"),
    [
        ({"name": "n" * (MAX_STUDY_NAME + 1)}, "name", MAX_STUDY_NAME),
        (
            {
                "space": {
                    f"p{i}": {"type": "float", "low": 0, "high": 1} for i in range(MAX_PARAMS + 1)
                }
            },
            "space",
            MAX_PARAMS,
        ),
        (
            {"objectives": {f"m{i}": "minimize" for i in range(MAX_OBJECTIVES + 1)}},
            "objectives",
            MAX_OBJECTIVES,
        ),
        (
            {"space": {"c": {"type": "categorical", "choices": list(range(MAX_CHOICES + 1))}}},
            "space",
            MAX_CHOICES,
        ),
        ({"metadata": {"blob": "x" * MAX_METADATA_BYTES}}, "metadata", MAX_METADATA_BYTES),
    ],
    ids=["name", "parameters", "objectives", "choices", "metadata"],
)
def test_study_spec_limits_are_422_naming_field_and_bound(
    server: str, changes: dict[str, Any], field: str, bound: int
) -> None:
    before = _study_count(server)
    spec = {**_spec(f"spec-limit-{field}"), **changes}
    r = http.post(f"{server}/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert str(err["details"]["field"]).split(".")[0] == field, err
    assert str(bound) in err["message"], err
    assert _study_count(server) == before


def test_string_and_mapping_limits_of_trials_and_nothing_is_stored(server: str) -> None:
    http.post(f"{server}/v1/studies", json=_spec("trial-limits")).raise_for_status()
    base = f"{server}/v1/studies/trial-limits"

    r = http.post(f"{base}/suggest", json={"client_id": "c" * (MAX_CLIENT_ID + 1)})
    err = _error(r, 422, "invalid_argument", "client_id")
    assert str(MAX_CLIENT_ID) in err["message"]
    assert http.get(f"{base}/trials").json()["total"] == 0

    trial = http.post(f"{base}/suggest", json={}).json()["trials"][0]["number"]
    many = {f"m{i}": 1.0 for i in range(MAX_METRICS + 1)}
    r = http.post(f"{base}/trials/{trial}/observe", json={"values": {"loss": 1.0, **many}})
    err = _error(r, 422, "invalid_argument", "values")
    assert str(MAX_METRICS) in err["message"]
    r = http.post(f"{base}/trials/{trial}/observe", json={"values": {"k" * (MAX_KEY + 1): 1.0}})
    assert r.status_code == 422 and str(MAX_KEY) in r.json()["error"]["message"], r.text
    big = {"blob": "x" * MAX_METADATA_BYTES}
    r = http.post(f"{base}/trials/{trial}/observe", json={"values": {"loss": 1.0}, "metadata": big})
    err = _error(r, 422, "invalid_argument", "metadata")
    assert str(MAX_METADATA_BYTES) in err["message"]
    got = http.get(f"{base}/trials/{trial}").json()
    assert got["state"] == "running" and got["values"] is None and got["metadata"] == {}

    r = http.post(f"{base}/enqueue", json={"params": {f"p{i}": 1 for i in range(MAX_PARAMS + 1)}})
    err = _error(r, 422, "invalid_argument", "params")
    assert str(MAX_PARAMS) in err["message"]


def test_model_registration_limits(server: str) -> None:
    body = {
        "artifact_base64": "AA==",
        "format": "xgboost-ubj",
        "signature": {"inputs": [{"name": "f"}]},
        "output_schema": {"description": "d" * 10_001},
    }
    r = http.post(f"{server}/v1/models/limits-reg/versions", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["details"]["field"] == "output_schema.description" and "10000" in err["message"]
    body["output_schema"] = {}
    body["lineage"] = {f"k{i}": i for i in range(65)}
    r = http.post(f"{server}/v1/models/limits-reg/versions", json=body)
    assert r.status_code == 422 and "at most 64" in r.json()["error"]["message"], r.text
    assert http.get(f"{server}/v1/models/limits-reg").status_code == 404


def test_bodies_that_are_not_text_and_numbers_too_big_for_the_database_are_422(server: str) -> None:
    # What the fuzz test found answered 400 and 500.
    r = http.post(
        f"{server}/v1/studies",
        content=b"\xff\xfe\x00",
        headers={"content-type": "application/json"},
    )
    err = _error(r, 422, "invalid_argument", "body")
    assert "not valid JSON" in err["message"]
    r = http.get(f"{server}/v1/feature-groups/fuzz_group", params={"version": 10**30})
    assert r.status_code == 422 and "out of range" in r.json()["error"]["message"], r.text


# -------------------------------------------------------------------------------------- rate


def test_rate_limit_per_key_answers_429_with_retry_after_and_stores_nothing(
    rate_server: str,
) -> None:
    a = {"x-api-key": "key-a"}
    for _ in range(3):  # the burst
        assert http.get(f"{rate_server}/v1/studies", headers=a).status_code == 200
    r = http.post(f"{rate_server}/v1/studies", json=_spec("rate-limited"), headers=a)
    err = _error(r, 429, "rate_limited", "rate")
    assert int(r.headers["retry-after"]) >= 1
    assert "0.5 per second" in err["message"] and "bursts of 3" in err["message"]
    assert err["details"]["retry_after_s"] == int(r.headers["retry-after"])

    # Another key has its own bucket; health checks are never limited.
    b = {"authorization": "Bearer key-b"}
    assert http.get(f"{rate_server}/v1/studies/rate-limited", headers=b).status_code == 404
    for _ in range(5):
        assert http.get(f"{rate_server}/v1/health", headers=a).status_code == 200

    # After Retry-After, key a is served again.
    time.sleep(int(r.headers["retry-after"]))
    assert http.get(f"{rate_server}/v1/studies", headers=a).status_code == 200


def test_rate_limit_without_key_is_per_client_address(rate_server: str) -> None:
    statuses = [http.get(f"{rate_server}/v1/studies").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]


def test_client_waits_out_the_rate_limit_or_raises_the_typed_error(rate_server: str) -> None:
    from autotune.client import Client
    from autotune.errors import RateLimitedError

    with Client(rate_server, api_key="key-client") as c:
        spec = _spec("rate-client")
        c.create_study(spec["name"], spec["space"], spec["objectives"])
        for _ in range(4):  # past the burst of 3: the client waits for Retry-After and retries
            assert c.get_study("rate-client").name == "rate-client"
    with Client(rate_server, api_key="key-client-2", retries=0) as c:
        with pytest.raises(RateLimitedError) as info:
            for _ in range(5):
                c.get_study("rate-client")
        assert info.value.details["retry_after_s"] >= 1


# --------------------------------------------------------------------------- the pieces alone


def test_token_bucket_refills_at_the_rate_and_forgets_old_keys() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 2, max_keys=2, clock=lambda: now[0])
    assert buckets.take("a") == 0.0 and buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)  # one token in half a second
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0 and buckets.take("c") == 0.0  # "a" is dropped (LRU)
    assert buckets.take("a") == 0.0  # back with a full bucket


def test_the_api_bounds_are_the_service_bounds() -> None:
    from autotune.api import deps, schemas
    from autotune.service import MAX_PAGE_LIMIT, MAX_SUGGEST_COUNT

    assert MAX_PAGE == deps.MAX_PAGE == MAX_PAGE_LIMIT
    assert MAX_SUGGEST == schemas.MAX_SUGGEST == MAX_SUGGEST_COUNT


def test_settings_from_environment() -> None:
    s = LimitSettings.from_env(
        {"AUTOTUNE_MAX_BODY_BYTES": "2048", "AUTOTUNE_RATE_LIMIT": "10", "AUTOTUNE_RATE_BURST": "5"}
    )
    assert (s.max_body_bytes, s.rate_per_s, s.rate_burst) == (2048, 10.0, 5)
    assert s.max_upload_bytes == LimitSettings().max_upload_bytes
    assert LimitSettings.from_env({}) == LimitSettings()
    assert LimitSettings().rate_per_s > 0 and not LimitSettings().rate_limit_loopback
    assert LimitSettings.from_env({"AUTOTUNE_RATE_LIMIT": "0"}).rate_per_s == 0  # off
    with pytest.raises(ValueError, match="AUTOTUNE_MAX_BODY_BYTES"):
        LimitSettings.from_env({"AUTOTUNE_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ValueError, match="rate_burst"):
        LimitSettings(rate_burst=0)
