"""The end-to-end demo on the embedded defaults (a SQLite file, a local server).

It starts ``autotune serve`` on a loopback port, creates a study over HTTP, runs a
suggest/observe loop on a synthetic function (Branin with a categorical twist), and prints the
best trial. Each later capability (the Dask runner, the registry, serving, features) adds its
step here, so that this one command shows the whole flow.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import autotune


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db_url: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"the server exited early:\n{err}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /v1/health within 60 s")


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def objective(params: dict) -> float:
    # A categorical "shift" makes the problem mixed; "none" is the best choice.
    shift = {"none": 0.0, "small": 2.0, "large": 10.0}[params["shift"]]
    return branin(params["x1"], params["x2"]) + shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--algorithm", default="auto")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="autotune-demo-"))
    db_url = f"sqlite:///{workdir / 'autotune.db'}"
    port = free_port()
    print(f"[1/3] starting the AutoTune service on http://127.0.0.1:{port} (db {db_url})")
    server = start_server(db_url, port)
    try:
        client = autotune.Client(f"http://127.0.0.1:{port}")
        study = client.create_study(
            name="demo-branin",
            space={
                "x1": autotune.Float(-5.0, 10.0),
                "x2": autotune.Float(0.0, 15.0),
                "shift": autotune.Categorical(["none", "small", "large"]),
            },
            objectives={"loss": "minimize"},
            algorithm=args.algorithm,
            seed=0,
        )
        print(f"[2/3] study {study.name!r}: {args.trials} trials, algorithm={args.algorithm}")
        t0 = time.perf_counter()
        for _ in range(args.trials):
            (trial,) = study.suggest(count=1)
            study.observe(trial, {"loss": objective(trial.params)})
        elapsed = time.perf_counter() - t0
        best = study.best_trial
        print(
            f"[3/3] best trial #{best.number}: loss={best.values['loss']:.4f} "
            f"params={best.params} (optimum 0.3979; {elapsed:.1f} s for {args.trials} trials)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    os.environ.pop("AUTOTUNE_DB", None)


if __name__ == "__main__":
    main()
