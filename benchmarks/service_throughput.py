"""Suggest+observe throughput of the study service, with Optuna's ask/tell on RDB storage as peer.

Rows: {autotune, optuna} x {embedded, http} x {sqlite, postgresql} x {1, 8} concurrent clients,
each a fixed duration of suggest+observe pairs with the random designer (Optuna: RandomSampler).
Optuna has no HTTP transport of its own; its gRPC storage proxy is the closest peer and is run
where grpcio is installed. Every row gets a fresh database. Results go to
``benchmarks/results/service_throughput.json`` and a table printed in markdown.

Usage: ``python benchmarks/service_throughput.py [--seconds 10] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results" / "service_throughput.json"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SPACE = {
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "y": {"type": "float", "low": -5.0, "high": 5.0},
    "n": {"type": "int", "low": 1, "high": 100},
    "c": {"type": "categorical", "choices": ["a", "b", "c"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def fresh_db(kind: str, tmp: Path) -> Iterator[str]:
    """A new, empty database URL of the given kind, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
        return
    import sqlalchemy as sa

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def autotune_server(db_url: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("autotune server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def optuna_grpc_server(db_url: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    code = (
        "import optuna, sys; optuna.logging.set_verbosity(optuna.logging.WARNING);"
        "from optuna.storages import run_grpc_proxy_server, RDBStorage;"
        f"run_grpc_proxy_server(RDBStorage({db_url!r}), host='127.0.0.1', port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("optuna grpc proxy did not start")
            time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def drive(
    make_worker: Callable[[int], Callable[[], None]], clients: int, seconds: float
) -> dict[str, float]:
    """Run ``clients`` threads, each calling its pair function until time is up."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    error_kinds: dict[str, int] = {}
    workers = [make_worker(i) for i in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def loop(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                workers[i]()
            except Exception as e:  # every error is counted and reported, none hidden
                errors[i] += 1
                key = f"{type(e).__name__}: {str(e)[:80]}"
                error_kinds[key] = error_kinds.get(key, 0) + 1
                continue
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t_start = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = sorted(x for per in latencies for x in per)
    n = len(lat)
    return {
        "pairs": n,
        "pairs_per_s": n / elapsed,
        "p50_ms": 1e3 * lat[n // 2] if n else float("nan"),
        "p99_ms": 1e3 * lat[min(n - 1, int(n * 0.99))] if n else float("nan"),
        "mean_ms": 1e3 * statistics.fmean(lat) if n else float("nan"),
        "errors": sum(errors),
        "error_kinds": error_kinds,
    }


def objective(params: dict) -> float:
    return (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2 + params["n"] / 100


def bench_autotune(target: str, clients: int, seconds: float) -> dict[str, float]:
    import autotune

    client = autotune.Client(target) if target.startswith("http") else autotune.Client(db=target)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    client.create_study(
        name=name, space=SPACE, objectives={"loss": "minimize"}, algorithm="random", seed=0
    )

    def make_worker(i: int) -> Callable[[], None]:
        study = client.get_study(name)

        def pair() -> None:
            (trial,) = study.suggest(count=1)
            study.observe(trial, {"loss": objective(trial.params)})

        return pair

    return drive(make_worker, clients, seconds)


def bench_optuna(storage: object, clients: int, seconds: float) -> dict[str, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    dists = {
        "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
        "y": optuna.distributions.FloatDistribution(-5.0, 5.0),
        "n": optuna.distributions.IntDistribution(1, 100),
        "c": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
    }
    optuna.create_study(study_name=name, storage=storage, direction="minimize")

    def make_worker(i: int) -> Callable[[], None]:
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=i)
        )

        def pair() -> None:
            trial = study.ask(dists)
            study.tell(trial, objective(trial.params))

        return pair

    return drive(make_worker, clients, seconds)


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="2 s per row")
    ap.add_argument("--dbs", default="sqlite,postgresql")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    logging.getLogger("httpx").setLevel(logging.WARNING)

    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    for db in args.dbs.split(","):
        for transport in ("embedded", "http"):
            for clients in (1, 8):
                for system in ("autotune", "optuna"):
                    row: dict = {
                        "system": system,
                        "transport": transport,
                        "db": db,
                        "clients": clients,
                    }
                    with fresh_db(db, tmp) as url:
                        if system == "autotune":
                            if transport == "embedded":
                                row.update(bench_autotune(url, clients, seconds))
                            else:
                                with autotune_server(url) as server:
                                    row.update(bench_autotune(server, clients, seconds))
                        else:
                            import optuna

                            if transport == "embedded":
                                storage = optuna.storages.RDBStorage(url)
                                row.update(bench_optuna(storage, clients, seconds))
                            elif grpc_available():
                                with optuna_grpc_server(url) as (host, port):
                                    storage = optuna.storages.GrpcStorageProxy(host=host, port=port)
                                    row.update(bench_optuna(storage, clients, seconds))
                            else:
                                row["skipped"] = "grpcio not installed"
                    rows.append(row)
                    print(json.dumps(row), flush=True)

    # Ratios of our rate to Optuna's, row by row.
    table = []
    for r in rows:
        if r["system"] != "autotune":
            continue
        peer = next(
            (
                p
                for p in rows
                if p["system"] == "optuna"
                and all(p[k] == r[k] for k in ("transport", "db", "clients"))
            ),
            None,
        )
        ratio = r["pairs_per_s"] / peer["pairs_per_s"] if peer and peer.get("pairs_per_s") else None
        table.append((r, peer, ratio))

    out = {
        "benchmark": "service_throughput",
        "seconds_per_row": seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "ratios": [
            {
                "transport": r["transport"],
                "db": r["db"],
                "clients": r["clients"],
                "autotune_per_s": r["pairs_per_s"],
                "optuna_per_s": p.get("pairs_per_s") if p else None,
                "ratio": ratio,
            }
            for r, p, ratio in table
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))

    print(
        "\n| transport | db | clients | AutoTune pairs/s | p50 / p99 ms | errors "
        "| Optuna pairs/s | p50 / p99 ms | errors | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, p, ratio in table:
        if p and "pairs_per_s" in p:
            peer_cols = (
                f"{p['pairs_per_s']:.0f} | {p['p50_ms']:.1f} / {p['p99_ms']:.1f} | {p['errors']}"
            )
        else:
            peer_cols = f"n/a ({p.get('skipped', 'not run') if p else 'not run'}) | | "
        print(
            f"| {r['transport']} | {r['db']} | {r['clients']} | {r['pairs_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['errors']} | {peer_cols} | "
            f"{'%.2fx' % ratio if ratio else 'n/a'} |"
        )


if __name__ == "__main__":
    main()
