"""``autotune run``: a bad spec is one line and exit 2; a real run registers, promotes and serves.

The end-to-end test runs ``autotune run`` as a subprocess twice on a 2-worker LocalCluster with an
SQLite file, then ``autotune serve`` on that file, and compares the served predictions with the
artifact's own in XGBoost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SPEC = "studies/xgb_breast_cancer.yaml"


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), prog_name="autotune")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "missing.yaml: cannot read the spec"),
        (
            "name: x\ndataset: {name: breast_cancer}\ntrainer: {type: xgbost}\nspace: {}\n",
            "bad.yaml: trainer.type: unknown trainer 'xgbost'; allowed: ",
        ),
        (
            "name: x\ndataset: {name: breast_cancer}\ntrainer: {type: xgboost}\n"
            "space: {eta: {type: float, low: 0.1, high: 0.3}}\npromotion: {alias: '7'}\n",
            "bad.yaml: promotion.alias: '7' is not allowed",
        ),
    ],
)
def test_bad_spec_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / ("missing.yaml" if content is None else "bad.yaml")
    if content is not None:
        path.write_text(content)
    result = _invoke("run", str(path), "--db", f"sqlite:///{tmp_path / 'a.db'}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "autotune-artifacts").exists()  # nothing ran


def test_workers_and_scheduler_are_exclusive(tmp_path: Path) -> None:
    result = _invoke("run", SPEC, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2 and "not both" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _autotune(*args: str, env: dict[str, str], timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _start_server(db: str, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = log_path.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"autotune serve did not become ready:\n{log_path.read_text()}")
        time.sleep(0.2)


@pytest.mark.slow
def test_run_registers_promotes_and_serves(tmp_path: Path) -> None:
    """``--db`` (embedded) for the first study, ``--server`` for a second that competes for the
    same model, then predictions from the server equal the production artifact's own."""
    import xgboost as xgb

    from serving import ModelRegistry
    from trainers import load_spec

    db = f"sqlite:///{tmp_path / 'autotune.db'}"
    store = tmp_path / "store"
    env = {**os.environ, "AUTOTUNE_MODEL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    env.pop("AUTOTUNE_SERVER", None)
    env.pop("AUTOTUNE_DB", None)
    common = ["--workers", "2", "--artifacts-dir", str(tmp_path / "trials")]

    out1 = _autotune("run", SPEC, "--trials", "4", "--db", db, *common, env=env)
    assert "study xgb_breast_cancer: 4 completed, 0 failed, 0 pruned" in out1
    assert "registered xgb_breast_cancer v1" in out1 and out1.count("-> promoted") == 1

    # The same command again: the study is finished and the retrained model is v1's bytes.
    again = _autotune("run", SPEC, "--trials", "4", "--db", db, *common, env=env)
    assert "is production v1 already; nothing registered" in again

    server, url = _start_server(db, env, tmp_path / "serve.log")
    try:
        # A second study (another seed), through the server, competes for the same model: v2,
        # promoted only if better on the test split.
        other = yaml.safe_load((ROOT / SPEC).read_text())
        other.update(name="xgb_breast_cancer_seed1", seed=1)
        other_spec = tmp_path / "other.yaml"
        other_spec.write_text(yaml.safe_dump(other))
        out2 = _autotune(
            "run", str(other_spec), "--trials", "4", "--model-name", "xgb_breast_cancer",
            "--server", url, *common, env=env,
        )  # fmt: skip
        assert "study xgb_breast_cancer_seed1: 4 completed" in out2
        assert "registered xgb_breast_cancer v2" in out2

        reg = ModelRegistry(db, store=store)
        try:
            m = reg.get_model("xgb_breast_cancer")
            v1, v2 = (reg.get_version("xgb_breast_cancer", n) for n in (1, 2))
            second, first = m.comparisons  # newest first
            assert first.promoted and first.candidate_version == 1
            assert first.incumbent_version is None
            assert (second.candidate_version, second.incumbent_version) == (2, 1)
            assert second.candidate_value == v2.metrics["log_loss"]
            assert second.incumbent_value == v1.metrics["log_loss"]
            better = v2.metrics["log_loss"] < v1.metrics["log_loss"]
            assert second.promoted is better
            assert m.aliases == {"production": 2 if better else 1}
            assert ("-> promoted" in out2) is better
            assert v2.lineage.model_dump()["study"] == "xgb_breast_cancer_seed1"
            production = reg.get_version("xgb_breast_cancer", "production")
            artifact = reg.store.get(production.artifact)
        finally:
            reg.close()

        splits = load_spec(ROOT / SPEC).load_splits()
        x_test, _ = splits.holdout()
        names = list(splits.dataset.feature_names)
        rows = [{n: float(v) for n, v in zip(names, x, strict=True)} for x in x_test[:8]]
        r = httpx.post(f"{url}/v1/models/xgb_breast_cancer/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == production.version and body["alias"] == "production"

        booster = xgb.Booster()
        booster.load_model(bytearray(artifact))
        expected = booster.inplace_predict(x_test[:8])
        np.testing.assert_allclose(body["predictions"], expected, rtol=1e-6)

        bad = httpx.post(f"{url}/v1/models/xgb_breast_cancer/predict", json={"rows": [{"x": 1}]})
        assert bad.status_code == 422 and "mean radius" in bad.text
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
