"""Load: 64 concurrent clients over 10 studies against two ``autotune serve`` processes on one
PostgreSQL database, with Optuna's RDB storage under the same load in the same run as the peer.

Usage (the full measurement, on an idle machine; about 3 minutes)::

    python benchmarks/load.py                      # 64 clients, 10 studies, 60 s per system
    python benchmarks/load.py --quick              # 10 s per system, to check it works
    python benchmarks/load.py --seconds 60 --clients 64 --studies 10 --servers 2 --client-procs 4

Each AutoTune client is an ``autotune.Client`` over HTTP looping suggest -> (a fake objective:
a cheap closed-form function) -> observe on one of the studies (client i: study i mod 10,
server i mod 2). Each Optuna client is a thread looping ``study.ask`` -> the same objective ->
``study.tell`` with ``RDBStorage`` on a separate database of the same PostgreSQL server (Optuna
has no server of its own; its storage is the shared component, as the database is ours). Both
systems get the random sampler, the same 4-parameter mixed space, and the same client layout:
``--client-procs`` processes of threads, so one load generator's GIL is not the ceiling.

Reported per system: completed pairs per second, p50/p99 latency of suggest/ask, observe/tell
and the pair, errors (count, by kind), the CPU seconds spent by the client processes and by
the server processes (AutoTune's two ``autotune serve``; Optuna has none), and the load
average before and after. Results: ``benchmarks/results/load.json`` and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from service_throughput import SPACE, autotune_server, fresh_db, objective  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "load.json"


def _percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * q))]


def _autotune_pair_factory(target: str, study: str) -> Any:
    import autotune

    client = autotune.Client(target)
    handle = client.get_study(study)

    def first() -> Any:
        (trial,) = handle.suggest(count=1)
        return trial

    def second(trial: Any) -> None:
        handle.observe(trial, {"loss": objective(trial.params)})

    return first, second, client.close


_OPTUNA_STORAGES: dict[str, Any] = {}
_OPTUNA_LOCK = threading.Lock()


def _optuna_pair_factory(target: str, study: str, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with _OPTUNA_LOCK:  # one RDBStorage (one engine and pool) per client process
        storage = _OPTUNA_STORAGES.get(target)
        if storage is None:
            storage = _OPTUNA_STORAGES[target] = optuna.storages.RDBStorage(target)
    dists = {
        "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
        "y": optuna.distributions.FloatDistribution(-5.0, 5.0),
        "n": optuna.distributions.IntDistribution(1, 100),
        "c": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
    }
    handle = optuna.load_study(
        study_name=study, storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed)
    )

    def first() -> Any:
        return handle.ask(dists)

    def second(trial: Any) -> None:
        handle.tell(trial, objective(trial.params))

    return first, second, lambda: None


def client_process(
    system: str,
    targets: list[str],
    studies: list[str],
    client_ids: list[int],
    seconds: float,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """One load-generating process: a thread per client id, each looping its pair until
    ``seconds`` after ``go`` is set. Puts its latencies, errors and CPU time on ``out``."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    n = len(client_ids)
    firsts: list[list[float]] = [[] for _ in range(n)]
    seconds_: list[list[float]] = [[] for _ in range(n)]
    pairs: list[list[float]] = [[] for _ in range(n)]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    workers: list[Any] = [None] * n
    built = threading.Barrier(n + 1)  # every client connected and its study loaded
    start = threading.Barrier(n + 1)  # the run begins

    def count_error(e: BaseException) -> None:
        key = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
        with lock:
            errors[key] = errors.get(key, 0) + 1

    def loop(j: int) -> None:
        cid = client_ids[j]
        target, study = targets[cid % len(targets)], studies[cid % len(studies)]
        try:
            if system == "autotune":
                workers[j] = _autotune_pair_factory(target, study)
            else:
                workers[j] = _optuna_pair_factory(target, study, seed=cid)
        except Exception as e:  # counted, and this client sits the run out
            count_error(e)
        built.wait()
        start.wait()
        if workers[j] is None:
            return
        first, second, _ = workers[j]
        stop_at = stop[0]
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                trial = first()
                t1 = time.perf_counter()
                second(trial)
            except Exception as e:  # every error is counted and reported, none hidden
                count_error(e)
                continue
            t2 = time.perf_counter()
            firsts[j].append(t1 - t0)
            seconds_[j].append(t2 - t1)
            pairs[j].append(t2 - t0)

    stop = [float("inf")]
    threads = [threading.Thread(target=loop, args=(j,), daemon=True) for j in range(n)]
    for t in threads:
        t.start()
    built.wait()
    ready.set()
    go.wait()
    stop[0] = time.perf_counter() + seconds
    cpu0 = time.process_time()
    start.wait()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    for w in workers:
        if w is not None:
            w[2]()
    out.put(
        {
            "first": [x for xs in firsts for x in xs],
            "second": [x for xs in seconds_ for x in xs],
            "pair": [x for xs in pairs for x in xs],
            "errors": errors,
            "cpu_s": cpu,
        }
    )


def drive(
    system: str,
    targets: list[str],
    studies: list[str],
    *,
    clients: int,
    procs: int,
    seconds: float,
    server_pids: list[int],
) -> dict[str, Any]:
    """Run ``clients`` clients in ``procs`` processes for ``seconds``; gather the metrics."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    readies = []
    ps = []
    for p in range(procs):
        ready = ctx.Event()
        ids = list(range(p, clients, procs))
        proc = ctx.Process(
            target=client_process,
            args=(system, targets, studies, ids, seconds, ready, go, out),
            daemon=True,
        )
        proc.start()
        readies.append(ready)
        ps.append(proc)
    for ready in readies:
        if not ready.wait(120):
            raise RuntimeError("a client process did not start")
    servers = [psutil.Process(pid) for pid in server_pids]
    server_cpu0 = sum(sum(s.cpu_times()[:2]) for s in servers)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    go.set()
    parts = [out.get(timeout=seconds + 300) for _ in ps]
    elapsed = time.perf_counter() - t_start
    server_cpu = sum(sum(s.cpu_times()[:2]) for s in servers) - server_cpu0
    load_after = os.getloadavg()
    for proc in ps:
        proc.join(30)

    first = sorted(x for part in parts for x in part["first"])
    second = sorted(x for part in parts for x in part["second"])
    pair = sorted(x for part in parts for x in part["pair"])
    errors: dict[str, int] = {}
    for part in parts:
        for k, v in part["errors"].items():
            errors[k] = errors.get(k, 0) + v
    n = len(pair)
    names = ("suggest", "observe") if system == "autotune" else ("ask", "tell")
    return {
        "system": system,
        "clients": clients,
        "client_procs": procs,
        "studies": len(studies),
        "servers": len(server_pids),
        "seconds": round(elapsed, 2),
        "pairs": n,
        "pairs_per_s": n / elapsed,
        f"{names[0]}_p50_ms": 1e3 * _percentile(first, 0.5),
        f"{names[0]}_p99_ms": 1e3 * _percentile(first, 0.99),
        f"{names[1]}_p50_ms": 1e3 * _percentile(second, 0.5),
        f"{names[1]}_p99_ms": 1e3 * _percentile(second, 0.99),
        "pair_p50_ms": 1e3 * _percentile(pair, 0.5),
        "pair_p99_ms": 1e3 * _percentile(pair, 0.99),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_cpu_s": round(sum(part["cpu_s"] for part in parts), 2),
        "server_cpu_s": round(server_cpu, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


def bench_autotune(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import autotune

    with fresh_db("postgresql", tmp) as url, ExitStack() as stack:
        servers = [stack.enter_context(autotune_server(url)) for _ in range(args.servers)]
        pids = [_server_pid(u) for u in servers]
        studies = [f"load-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.studies)]
        with autotune.Client(servers[0]) as c:
            for i, name in enumerate(studies):
                c.create_study(
                    name=name,
                    space=SPACE,
                    objectives={"loss": "minimize"},
                    algorithm="random",
                    seed=i,
                )
        row = drive(
            "autotune",
            servers,
            studies,
            clients=args.clients,
            procs=args.client_procs,
            seconds=args.seconds,
            server_pids=pids,
        )
        with autotune.Client(db=url) as c:  # every acknowledged observe is stored
            row["stored_completed"] = sum(
                c.get_study(name).count_trials(autotune.TrialState.COMPLETED) for name in studies
            )
        return row


def bench_optuna(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with fresh_db("postgresql", tmp) as url:
        storage = optuna.storages.RDBStorage(url)
        studies = [f"load-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.studies)]
        for name in studies:
            optuna.create_study(study_name=name, storage=storage, direction="minimize")
        storage.engine.dispose()
        row = drive(
            "optuna",
            [url],
            studies,
            clients=args.clients,
            procs=args.client_procs,
            seconds=args.seconds,
            server_pids=[],
        )
        storage = optuna.storages.RDBStorage(url)
        row["stored_completed"] = sum(
            len(
                storage.get_all_trials(
                    storage.get_study_id_from_name(name),
                    deepcopy=False,
                    states=(optuna.trial.TrialState.COMPLETE,),
                )
            )
            for name in studies
        )
        storage.engine.dispose()
        return row


def _server_pid(url: str) -> int:
    """The pid of the ``autotune serve`` child listening on ``url``'s port."""
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "serve" in cmd and port in cmd:
            return child.pid
    raise RuntimeError(f"no autotune serve process for {url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="per system (default 60)")
    ap.add_argument("--quick", action="store_true", help="10 s per system")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--servers", type=int, default=2, help="autotune serve processes")
    ap.add_argument("--client-procs", type=int, default=4, help="load-generating processes")
    ap.add_argument("--systems", default="autotune,optuna")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.seconds = 10.0
    tmp = Path(tempfile.mkdtemp(prefix="autotune-load-"))

    rows = []
    for system in args.systems.split(","):
        row = (bench_autotune if system == "autotune" else bench_optuna)(args, tmp)
        rows.append(row)
        print(json.dumps(row), flush=True)

    by = {r["system"]: r for r in rows}
    ratios = {}
    if "autotune" in by and "optuna" in by and by["optuna"]["pairs_per_s"]:
        a, o = by["autotune"], by["optuna"]
        ratios = {
            "throughput": a["pairs_per_s"] / o["pairs_per_s"],
            "pair_p50": o["pair_p50_ms"] / a["pair_p50_ms"],
            "pair_p99": o["pair_p99_ms"] / a["pair_p99_ms"],
        }
    result = {
        "benchmark": "load",
        "command": " ".join(["python", "benchmarks/load.py", *sys.argv[1:]]),
        "seconds_per_system": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rows": rows,
        "ratios_autotune_over_optuna": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        "\n| system | pairs/s | suggest (ask) p50 / p99 ms | observe (tell) p50 / p99 ms "
        "| pair p50 / p99 ms | errors | client / server CPU s | load avg (1 min) before → after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b = ("suggest", "observe") if r["system"] == "autotune" else ("ask", "tell")
        print(
            f"| {r['system']} | {r['pairs_per_s']:.0f} | {r[a + '_p50_ms']:.1f} / "
            f"{r[a + '_p99_ms']:.1f} | {r[b + '_p50_ms']:.1f} / {r[b + '_p99_ms']:.1f} | "
            f"{r['pair_p50_ms']:.1f} / {r['pair_p99_ms']:.1f} | {r['errors']} | "
            f"{r['client_cpu_s']:.0f} / {r['server_cpu_s']:.0f} | "
            f"{r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |"
        )
    if ratios:
        print(
            f"\nAutoTune / Optuna: {ratios['throughput']:.2f}x throughput, "
            f"{ratios['pair_p50']:.2f}x faster p50, {ratios['pair_p99']:.2f}x faster p99"
        )


if __name__ == "__main__":
    main()
