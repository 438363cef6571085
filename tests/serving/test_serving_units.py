"""Micro-batching, metrics exposition, signatures, the CLI, and imports of the serving path."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from serving_helpers import FEATURES, REPO, register

from serving.batching import BatchingConfig, MicroBatcher
from serving.errors import InvalidInputError, OverloadedError
from serving.metrics import ServingMetrics
from serving.schemas import Signature


def test_micro_batcher_coalesces_concurrent_requests():
    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x[:, 0] * 2

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(predict, BatchingConfig(max_batch_size=64, max_wait_ms=20))
        xs = [np.full((1, 2), i, dtype=np.float32) for i in range(40)]
        return await asyncio.gather(*(b.predict(x) for x in xs))

    out = asyncio.run(main())
    assert [float(o[0]) for o in out] == [2.0 * i for i in range(40)]  # each gets its own rows
    assert sum(calls) == 40 and len(calls) <= 3 and max(calls) >= 20


def test_micro_batcher_bounds_its_queue_and_passes_errors_on():
    gate = threading.Event()

    def slow(x: np.ndarray) -> np.ndarray:
        gate.wait(5)
        return x[:, 0]

    async def main() -> None:
        # inline_rows=0: the model runs in a thread, so the loop stays free while it is busy.
        b = MicroBatcher(
            slow, BatchingConfig(max_batch_size=1, max_wait_ms=0, max_queue=2), inline_rows=0
        )
        first = asyncio.ensure_future(b.predict(np.zeros((1, 1), np.float32)))
        await asyncio.sleep(0.05)  # taken by the runner, blocked in the model
        queued = [asyncio.ensure_future(b.predict(np.zeros((1, 1), np.float32))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError):
            await b.predict(np.zeros((1, 1), np.float32))
        gate.set()
        await asyncio.gather(first, *queued)

        def broken(x: np.ndarray) -> np.ndarray:
            raise RuntimeError("model exploded")

        b2 = MicroBatcher(broken, BatchingConfig())
        with pytest.raises(RuntimeError, match="exploded"):
            await b2.predict(np.zeros((1, 1), np.float32))

    asyncio.run(main())


@pytest.mark.parametrize("use_client", [True, False])
def test_metrics_exposition(use_client):
    if use_client:
        pytest.importorskip("prometheus_client")
    m = ServingMetrics(use_prometheus_client=use_client)
    m.observe_request(
        model="m", version="1", alias="production", endpoint="v1_predict", code=200,
        seconds=0.0015, rows=3,
    )  # fmt: skip
    m.observe_request(
        model="m", version="1", alias="", endpoint="v1_predict", code=422, seconds=0.001
    )
    m.observe_batch(model="m", version="1", rows=7)
    text = m.render().decode()
    assert (
        'autotune_serving_requests_total{alias="production",code="200",endpoint="v1_predict",'
        'model="m",version="1"} 1.0' in text
    )
    assert 'autotune_serving_errors_total{alias="",code="422"' in text
    assert 'autotune_serving_rows_total{alias="production",model="m",version="1"} 3.0' in text
    assert (
        'autotune_serving_request_duration_seconds_bucket{alias="production",endpoint='
        '"v1_predict",le="0.002",model="m",version="1"} 1.0' in text
    )
    assert 'autotune_serving_batch_size_bucket{le="8.0",model="m",version="1"} 1.0' in text


def test_signature_checks_types_strictly():
    sig = Signature(inputs=[{"name": "x"}, {"name": "n", "type": "int"},
                            {"name": "b", "type": "bool"}, {"name": "z", "nullable": True}])  # fmt: skip
    m = sig.to_matrix([{"x": 1, "n": 2, "b": True, "z": None}])
    assert m.dtype == np.float32 and m[0, :3].tolist() == [1.0, 2.0, 1.0] and np.isnan(m[0, 3])
    with pytest.raises(InvalidInputError) as e:
        sig.to_matrix([{"x": True, "n": 2.5, "b": 1, "z": "a"}])
    assert [w["feature"] for w in e.value.details["wrong_type"]] == ["x", "n", "b", "z"]
    with pytest.raises(ValueError, match="duplicate"):
        Signature(inputs=[{"name": "a"}, {"name": "a"}])


def test_cli_list_show_promote_rollback(sqlite_url, store, registry, models):
    from serving.cli import cli

    register(registry, models, "clim", metrics={"auc": 0.9})
    register(registry, models, "clim", which="large", metrics={"auc": 0.95})
    run = CliRunner().invoke
    base = ["--db", sqlite_url, "--store", str(store)]
    r = run(cli, ["models", "promote", "clim", "1", *base])
    assert r.exit_code == 0, r.output
    r = run(cli, ["models", "promote", "clim", "2", "--if-better", "auc", "--direction",
                  "maximize", *base])  # fmt: skip
    assert r.exit_code == 0 and "promoted" in r.output and "0.95 > 0.9" in r.output
    r = run(cli, ["models", "list", *base])
    assert "clim" in r.output and "production=v2" in r.output
    r = run(cli, ["models", "rollback", "clim", *base])
    assert r.exit_code == 0 and "v2 -> v1" in r.output
    r = run(cli, ["models", "show", "clim", *base])
    assert "alias history" in r.output and "promotion decisions" in r.output
    r = run(cli, ["models", "show", "clim", "production", "--json", *base])
    assert json.loads(r.output)["version"] == 1
    r = run(cli, ["models", "rollback", "nope", *base])
    assert r.exit_code != 0 and "not found" in r.output


def test_serving_path_does_not_import_torch_or_botorch(sqlite_url, store, registry, models):
    """Build the app, load an XGBoost model and predict, all without torch or botorch."""
    register(registry, models, "light")
    code = f"""
import sys
from fastapi.testclient import TestClient
from serving.app import create_serving_app
app = create_serving_app(db_url={sqlite_url!r}, artifact_dir={str(store)!r})
with TestClient(app) as c:
    rows = [{{f: 1.0 for f in {FEATURES!r}}}]
    r = c.post("/v1/models/light/predict", json={{"rows": rows}})
    assert r.status_code == 200, r.text
heavy = sorted(m for m in ("torch", "botorch", "gpytorch", "skops") if m in sys.modules)
print("HEAVY", heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
