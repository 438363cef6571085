"""The end-to-end demo on the embedded defaults (a SQLite file, a local server).

1. start ``autotune serve`` on a loopback port (a SQLite file in a temporary directory);
2. create a study over HTTP and run a suggest/observe loop on a synthetic function (Branin with
   a categorical twist);
3. tune XGBoost on breast_cancer (``studies/xgb_breast_cancer.yaml``) on a 2-worker Dask
   LocalCluster against that server, as ``autotune run ... --server URL`` does;
4. retrain the best trial on train+validation, score it on the held-out test split, register it
   and promote it to ``production`` (it is the first version, so it wins);
5. call the served model over HTTP with a few test rows, and print the dashboard's address.

Each later capability (features, ...) adds its step here, so that one command shows the whole
flow.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
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

ROOT = Path(__file__).resolve().parents[1]
SERVED_ROWS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db_url: str, port: int, store: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # The model registry's artifacts go beside the database, not into the repository.
        env={**os.environ, "AUTOTUNE_MODEL_STORE": str(store)},
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


def tune_and_serve(url: str, workdir: Path, *, trials: int, workers: int) -> None:
    """Steps 3 to 5: a study spec on Dask against the server, promotion, a served prediction."""
    import distributed  # noqa: F401  (its logging set up first, then quieted)

    from trainers import load_spec, run_study
    from trainers.promote import open_registry, promote_best

    logging.getLogger("distributed").setLevel(logging.ERROR)
    spec = load_spec(ROOT / "studies" / "xgb_breast_cancer.yaml")
    print(
        f"[3/5] study {spec.name!r} (XGBoost on breast_cancer, {spec.primary_metric}): "
        f"{trials} trials on {workers} Dask workers (LocalCluster) against the server"
    )
    result = run_study(
        spec,
        client=url,
        n_trials=trials,
        workers=workers,
        progress=False,
        artifacts_dir=workdir / "trials",
    )
    best = result.best
    if best is None:
        raise SystemExit(f"no trial completed ({result.failed} failed)")
    print(
        f"      {result.completed} completed, {result.failed} failed, {result.pruned} pruned in "
        f"{result.elapsed_s:.1f} s; best trial #{best.number}: {spec.primary_metric} "
        f"{best.values[spec.primary_metric]:.4f} (validation)"
    )

    splits = spec.load_splits()
    registry = open_registry(url)
    try:
        outcome = promote_best(spec, best, registry=registry, splits=splits)
    finally:
        registry.close()
    print(f"[4/5] {outcome.summary()}")

    x_test, y_test = splits.holdout()
    names = splits.dataset.feature_names
    classes = splits.dataset.classes
    rows = [{n: float(v) for n, v in zip(names, x, strict=True)} for x in x_test[:SERVED_ROWS]]
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/models/{outcome.model}/predict", json={"rows": rows}, timeout=30)
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    body = r.json()
    print(
        f"[5/5] POST /v1/models/{outcome.model}/predict with {len(rows)} test rows -> "
        f"v{body['version']} ({body['alias']}), {ms:.0f} ms"
    )
    print(f"      {'row':>3}  {'P(' + classes[1] + ')':>10}  {'predicted':<10} true")
    for i, (p, y) in enumerate(zip(body["predictions"], y_test[:SERVED_ROWS], strict=True)):
        print(f"      {i:>3}  {p:>10.3f}  {classes[int(p >= 0.5)]:<10} {classes[int(y)]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=30, help="suggest/observe trials (Branin)")
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument("--tune-trials", type=int, default=8, help="XGBoost trials on Dask")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    ap.add_argument(
        "--keep-serving", action="store_true", help="keep the server up until Ctrl-C at the end"
    )
    args = ap.parse_args()

    start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="autotune-demo-"))
    db_url = f"sqlite:///{workdir / 'autotune.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"[1/5] starting the AutoTune service on {url} (db {db_url})")
    server = start_server(db_url, port, workdir / "models")
    try:
        client = autotune.Client(url)
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
        t0 = time.perf_counter()
        for _ in range(args.trials):
            (trial,) = study.suggest(count=1)
            study.observe(trial, {"loss": objective(trial.params)})
        elapsed = time.perf_counter() - t0
        best = study.best_trial
        print(
            f"[2/5] suggest/observe on {study.name!r}: {args.trials} trials "
            f"(algorithm={args.algorithm}) in {elapsed:.1f} s; best #{best.number}: "
            f"loss={best.values['loss']:.4f} (optimum 0.3979)"
        )
        client.close()
        tune_and_serve(url, workdir, trials=args.tune_trials, workers=args.workers)
        print(f"dashboard: {url}/   (studies, trials and figures; API docs at {url}/docs)")
        print(f"done in {time.perf_counter() - start:.0f} s; files in {workdir}")
        if args.keep_serving:
            print("serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
    finally:
        server.terminate()
        server.wait(timeout=30)
    os.environ.pop("AUTOTUNE_DB", None)


if __name__ == "__main__":
    main()
