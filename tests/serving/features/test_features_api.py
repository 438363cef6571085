"""The REST API against a real uvicorn server on loopback (SQLite file), through the Python
client and raw HTTP; the same client calls in-process; the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import customers
from serving_helpers import free_port

from autotune.errors import ValidationError
from serving.features.client import FeatureStore
from serving.features.errors import (
    FeatureGroupNotFoundError,
    FeatureSchemaError,
    IngestionRejectedError,
)

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """uvicorn with the feature store's app factory: (base URL, database URL)."""
    tmp = tmp_path_factory.mktemp("features_api")
    db = f"sqlite:///{tmp / 'autotune.db'}"
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "AUTOTUNE_DB": db, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.features.api:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url + "/v1/feature-groups", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((tmp / "server.log").read_text()[-3000:])
        time.sleep(0.2)
    try:
        yield url, db
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(params=["http", "embedded"])
def client(request: pytest.FixtureRequest, server: tuple[str, str]) -> Iterator[FeatureStore]:
    url, db = server
    fs = FeatureStore(url) if request.param == "http" else FeatureStore(db=db)
    yield fs
    fs.close()


def test_client_round_trip(client: FeatureStore, unique_name: str) -> None:
    name = "g" + unique_name[-12:]
    r = client.apply(customers(name=name))
    assert r.action == "created" and client.get_group(name).owner == "growth"
    assert name in [g.name for g in client.list_groups()]
    frame = pd.DataFrame({
        "customer_id": [1, 2, 3], "ts": pd.to_datetime(["2030-01-01"] * 3, utc=True),
        "spend": [1.5, -2.0, 3.0], "tier": ["gold", "silver", "tin"],
    })  # fmt: skip
    r = client.ingest(name, frame)  # Parquet over HTTP
    assert (r.accepted, r.rejected) == (1, 2)
    assert {x["row"] for x in r.rejections} == {1, 2}
    assert client.push(name, {"customer_id": 4, "ts": "2030-01-01T00:00:00Z", "spend": 2}).accepted
    with pytest.raises(IngestionRejectedError):
        client.push(name, {"customer_id": 5, "ts": "2030-01-01T00:00:00Z", "spend": -1})
    got = client.get_online(name, [{"customer_id": 1}, {"customer_id": 4}, {"customer_id": 2}])
    # Real clock: 2030 is in the future, so the values are fresh.
    assert [g.status for g in got] == ["present", "present", "missing"]
    assert got[0].features["spend"] == 1.5 and got[0].features["tier"] == "gold"
    labels = [{"customer_id": 1, "timestamp": "2030-01-01T00:10:00Z", "y": 1},
              {"customer_id": 1, "timestamp": "2029-12-31T23:00:00Z", "y": 0}]  # fmt: skip
    ts = client.create_training_set(name, labels, [f"{name}:spend"], label="y")
    assert ts.columns == ["spend"] and client.get_training_set(name).version == ts.version
    frame = client.training_set_frame(name)
    assert frame["spend"].iloc[0] == 1.5 and pd.isna(frame["spend"].iloc[1])
    assert name in [t.name for t in client.list_training_sets()]
    with pytest.raises(FeatureGroupNotFoundError):
        client.get_group("nope_" + name)
    with pytest.raises(FeatureSchemaError):
        client.ingest(name, [{"customer_id": 1}])


def test_bad_payloads_over_http(server: tuple[str, str], unique_name: str) -> None:
    url, _db = server
    name = "b" + unique_name[-12:]
    with httpx.Client(base_url=url + "/v1", timeout=30) as http:
        assert http.post("/feature-groups", json=customers(name=name)).status_code == 201
        assert http.post("/feature-groups", json=customers(name=name)).status_code == 200

        def err(r: httpx.Response) -> tuple[int, str]:
            return r.status_code, r.json()["error"]["code"]

        ingest = f"/feature-groups/{name}/ingest"
        assert err(
            http.post(ingest, content=b"{not json", headers={"content-type": "application/json"})
        ) == (422, "feature_schema")
        assert err(http.post(ingest, json={"row": {}})) == (422, "feature_schema")
        assert err(
            http.post(ingest, content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
        ) == (422, "feature_schema")
        assert err(
            http.post(
                ingest,
                content=b"PAR1garbage",
                headers={"content-type": "application/vnd.apache.parquet"},
            )
        ) == (422, "feature_schema")
        assert err(http.post(ingest, content=b"x", headers={"content-type": "image/png"})) == (
            422,
            "feature_schema",
        )
        assert err(http.post(ingest + "?on_invalid=maybe", json={"rows": []})) == (
            422,
            "invalid_argument",
        )
        assert err(http.post("/feature-groups", json={"name": name})) == (422, "invalid_argument")
        assert err(http.post("/feature-groups/nope/ingest", json={"rows": []})) == (
            404,
            "feature_group_not_found",
        )
        assert err(http.post(f"/feature-groups/{name}/online", json={"entities": []})) == (
            422,
            "invalid_argument",
        )
        assert err(
            http.post(f"/feature-groups/{name}/online", json={"entities": [{"customer_id": "x"}]})
        ) == (422, "invalid_argument")
        # CSV with a bad row: reported with its reason, the good row stored.
        csv = b"customer_id,ts,spend\n7,2030-01-01T00:00:00Z,1.0\n8,2030-01-01T00:00:00Z,-3\n"
        r = http.post(ingest, content=csv, headers={"content-type": "text/csv"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        assert "below the minimum" in r.json()["rejections"][0]["reasons"][0]
        r = http.post(f"/feature-groups/{name}/online", json={"entities": [{"customer_id": 7}]})
        assert r.json()["rows"][0]["features"]["spend"] == 1.0
        body = {"name": name, "features": [f"{name}:spend"], "labels": [
            {"customer_id": 7, "timestamp": "2030-01-01T00:30:00Z"}]}  # fmt: skip
        assert http.post("/training-sets", json=body).status_code == 201
        r = http.get(f"/training-sets/{name}/data", params={"format": "parquet"})
        assert pd.read_parquet(io.BytesIO(r.content))["spend"].tolist() == [1.0]
        assert (
            json.loads(http.get(f"/training-sets/{name}/data").content)["rows"][0]["spend"] == 1.0
        )
        assert err(http.get("/training-sets/nope")) == (404, "training_set_not_found")


def test_cli(server: tuple[str, str], tmp_path: Path, unique_name: str) -> None:
    from click.testing import CliRunner

    from serving.features.cli import features

    _url, db = server
    name = "c" + unique_name[-12:]
    spec = tmp_path / "g.json"
    spec.write_text(json.dumps(customers(name=name)))
    data = tmp_path / "rows.csv"
    data.write_text("customer_id,ts,spend\n1,2030-01-01T00:00:00Z,2.5\n2,2030-01-01T00:00:00Z,-1\n")
    runner = CliRunner()
    r = runner.invoke(features, ["create", str(spec), "--db", db])
    assert r.exit_code == 0 and f"created: {name}@1" in r.output
    r = runner.invoke(features, ["list", "--db", db])
    assert name in r.output
    r = runner.invoke(features, ["show", name, "--db", db])
    assert json.loads(r.output)["owner"] == "growth"
    r = runner.invoke(features, ["ingest", name, str(data), "--db", db])
    assert r.exit_code == 1 and "1 accepted, 1 rejected" in r.output
    r = runner.invoke(features, ["lookup", name, "-e", "customer_id=1", "-f", "spend", "--db", db])
    assert r.exit_code == 0 and json.loads(r.output)[0]["features"] == {"spend": 2.5}
    r = runner.invoke(features, ["show", "nope", "--db", db])
    assert r.exit_code == 1 and "feature_group_not_found" in r.output
    r = subprocess.run([sys.executable, "-m", "serving.features.cli", "list", "--db", db],
                       cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and name in r.stdout


def test_client_errors_are_typed(client: FeatureStore, unique_name: str) -> None:
    with pytest.raises(FeatureGroupNotFoundError) as e:
        client.get_online("whatever_missing", [{"a": 1}])
    assert isinstance(e.value, KeyError)
    name = "e" + unique_name[-12:]
    client.apply(customers(name=name))
    with pytest.raises(ValidationError) as v:
        client.get_online(name, [{"customer_id": "not-a-number"}])
    assert v.value.field == "entities.0.customer_id"
