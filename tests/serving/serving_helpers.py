"""Helpers of the serving tests: small XGBoost models trained here and a real uvicorn model
server in a subprocess on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
FEATURES = [f"f{i}" for i in range(30)]


@dataclass
class Models:
    """Two boosters on the breast-cancer data, different enough to tell apart."""

    x: np.ndarray
    y: np.ndarray
    small: bytes  # 5 rounds, UBJSON
    large: bytes  # 40 rounds, UBJSON
    small_json: bytes
    examples: list[dict[str, float]]


def train_models() -> Models:
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    d = xgb.DMatrix(x, label=y, feature_names=FEATURES)
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}
    small = xgb.train(params, d, 5)
    large = xgb.train(params, d, 40)
    examples = [dict(zip(FEATURES, map(float, x[i]), strict=True)) for i in range(4)]
    return Models(
        x=x,
        y=y,
        small=bytes(small.save_raw("ubj")),
        large=bytes(large.save_raw("ubj")),
        small_json=bytes(small.save_raw("json")),
        examples=examples,
    )


def register(reg: Any, models: Models, name: str, which: str = "small", **kw: Any) -> Any:
    data = {"small": models.small, "large": models.large, "small_json": models.small_json}[which]
    fmt = "xgboost-json" if which.endswith("json") else "xgboost-ubj"
    return reg.register(
        name,
        artifact=data,
        format=fmt,
        signature=FEATURES,
        input_example=models.examples,
        metrics=kw.pop("metrics", {"auc": 0.9 if which == "small" else 0.97}),
        lineage=kw.pop("lineage", {"study": "bc", "trial": 3, "dataset": "breast_cancer"}),
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    db_url: str, store: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> Server:
    """``python -m serving.cli serve-models`` on a free loopback port; waits until ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "serving.cli", "serve-models", "--port", str(port),
           "--db", db_url, "--store", str(store), "--poll-s", "0.2", *args]  # fmt: skip
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    fh = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return Server(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become ready:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
