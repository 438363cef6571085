"""Parallel efficiency and orchestration overhead of the Dask runner, with Optuna as the peer.

Workloads, each with 1 and 2 workers (more where the machine has the cores, ``--workers``):

- ``sleep-1s``: trials that sleep one second (``trainers.synthetic.SleepTrainer``): the ideal
  wall time is ``n_trials * 1 s / workers``, so efficiency = ideal / measured shows the runner's
  cost alone, and the overhead per trial is ``(measured - ideal) * workers / n_trials``.
- ``xgboost``: real XGBoost trials on breast_cancer (``XGBoostTrainer``, every round reported).
  Their duration is not fixed, so the ideal is the busy time: the sum of the trials' own
  durations (measured where they ran) divided by the workers; efficiency = ideal / measured.
  ``scaling`` compares the time per trial with that of the same runner on 1 worker.

Peer: the same trials through Optuna's ``study.optimize(n_jobs=workers)`` (threads, in-memory
storage, RandomSampler, ``trial.report`` every round), the usual way Optuna users parallelize
on one machine. AutoTune runs the random designer too, on an embedded SQLite service, with a
warmed LocalCluster of ``workers`` processes x 1 thread (cluster start-up is not counted; it is
reported separately). The machine's cores may be shared: numbers are as measured in one run.

Each row is the median (by efficiency) of ``--repeat`` runs, interleaved with the peer's so both
see the same background load; the spread is kept beside it.

Usage: ``python benchmarks/dask_runner.py [--sleep-trials 8] [--xgb-trials 12] [--workers 1 2]
[--repeat 3]``
Results: ``benchmarks/results/dask_runner.json``, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "dask_runner.json"
SLEEP_S = 1.0
XGB_OPTIONS = {"num_boost_round": 100, "early_stopping_rounds": 10}
XGB_SPACE = {
    "eta": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "max_depth": {"type": "int", "low": 2, "high": 8},
    "subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
}
SLEEP_SPACE = {"x": {"type": "float", "low": -1.0, "high": 1.0}}


def _spec(name: str, workload: str, n_trials: int) -> Any:
    from trainers import parse_spec

    if workload == "sleep-1s":
        trainer = {"type": "sleep", "options": {"duration_s": SLEEP_S, "steps": 1}}
        return parse_spec(
            {
                "name": name,
                "dataset": {"name": "breast_cancer"},
                "trainer": trainer,
                "objectives": {"loss": "minimize"},
                "space": SLEEP_SPACE,
                "max_trials": n_trials,
                "algorithm": "random",
                "seed": 0,
            },
            source="benchmark",
        )
    return parse_spec(
        {
            "name": name,
            "dataset": {"name": "breast_cancer"},
            "trainer": {"type": "xgboost", "options": XGB_OPTIONS, "params": {"nthread": 1}},
            "objectives": {"log_loss": "minimize"},
            "space": XGB_SPACE,
            "max_trials": n_trials,
            "algorithm": "random",
            "seed": 0,
        },
        source="benchmark",
    )


def run_autotune(dask: Any, db: str, workload: str, workers: int, n_trials: int, tag: str) -> dict:
    import autotune
    from trainers import run_study

    spec = _spec(f"bench-{workload}-{workers}w-{tag}", workload, n_trials)
    with autotune.Client(db=db) as client:
        t0 = time.perf_counter()
        result = run_study(
            spec,
            client=client,
            dask_client=dask,
            progress=False,
            artifacts_dir=Path(db.removeprefix("sqlite:///")).parent / "artifacts",
        )
        wall = time.perf_counter() - t0
    assert result.completed == n_trials, (result.completed, result.failed)
    spans = [(o.started_at, o.ended_at) for o in result.ran]
    return _row("autotune-dask", workload, workers, n_trials, wall, spans)


def run_optuna(workload: str, workers: int, n_trials: int) -> dict:
    import optuna

    from trainers import XGBoostTrainer, load_dataset, split_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = split_dataset(load_dataset("breast_cancer"), seed=0).tuning_data()
    trainer = XGBoostTrainer(**XGB_OPTIONS)
    spans: list[tuple[float, float]] = []

    class _Report:
        def __init__(self, trial: Any) -> None:
            self.trial = trial

        def report(self, step: int, value: float) -> bool:
            self.trial.report(value, step)
            return self.trial.should_prune()

    def sample(trial: Any, space: dict) -> dict:
        out: dict[str, Any] = {}
        for k, p in space.items():
            if p["type"] == "float":
                out[k] = trial.suggest_float(k, p["low"], p["high"], log=p.get("log", False))
            else:
                out[k] = trial.suggest_int(k, p["low"], p["high"])
        return out

    def objective(trial: Any) -> float:
        t = time.time()
        if workload == "sleep-1s":
            params = sample(trial, SLEEP_SPACE)
            time.sleep(SLEEP_S)
            trial.report(params["x"] ** 2, 0)
            value = params["x"] ** 2
        else:
            params = {**sample(trial, XGB_SPACE), "nthread": 1}
            res = trainer.fit(params, data, reporter=_Report(trial), metric="log_loss", seed=0)
            value = res.metrics["log_loss"]
        spans.append((t, time.time()))
        return value

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, n_jobs=workers)
    wall = time.perf_counter() - t0
    return _row("optuna-threads", workload, workers, n_trials, wall, spans)


def _row(
    runner: str, workload: str, workers: int, n: int, wall: float, spans: list[tuple[float, float]]
) -> dict:
    """One result row. ``spans``: (start, end) of every trial, clock time where it ran.

    efficiency = ideal / wall, everything included. overhead_ms_per_trial = the slot time
    per trial that was not spent in the trial's own work, while trials ran (the loop:
    first start to last end): suggest, submit, dispatch, observe, reporting's final flush.
    fixed_s = the rest of the wall time (create/load the study, ship data, final counts).
    """
    durations = [e - s for s, e in spans]
    busy = n * SLEEP_S if workload == "sleep-1s" else sum(durations)
    ideal = busy / workers
    loop = max(e for _, e in spans) - min(s for s, _ in spans)
    return {
        "runner": runner,
        "workload": workload,
        "workers": workers,
        "trials": n,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / wall, 3),
        "overhead_ms_per_trial": round((loop * workers - busy) / n * 1000, 1),
        "fixed_s": round(wall - loop, 3),
        "mean_trial_s": round(sum(durations) / n, 4),
    }


def _median(runs: list[dict]) -> dict:
    """The run with the median efficiency, with the spread of all runs beside it."""
    ranked = sorted(runs, key=lambda r: r["efficiency"])
    row = dict(ranked[len(ranked) // 2])
    row["repeats"] = len(runs)
    row["efficiency_range"] = [ranked[0]["efficiency"], ranked[-1]["efficiency"]]
    row["overhead_ms_range"] = sorted(r["overhead_ms_per_trial"] for r in runs)[
        :: len(runs) - 1 or 1
    ]
    return row


def _noop(i: int) -> int:
    return i


def dask_roundtrip_ms(dask: Any, n: int = 30) -> float:
    """Median submit-to-result time of a no-op task: Dask's own floor for a trial's turnaround."""
    import statistics

    times = []
    for i in range(n):
        t = time.perf_counter()
        dask.submit(_noop, i, pure=False).result()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def _warm(dask: Any, db: str) -> None:
    """Import the trainers and open the service connection on every worker, untimed."""
    from trainers import XGBoostTrainer
    from trainers._worker import warm_up

    dask.run(warm_up, db, XGBoostTrainer())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sleep-trials", type=int, default=8, help="sleep trials per worker")
    ap.add_argument("--xgb-trials", type=int, default=12, help="XGBoost trials per worker")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the median is kept")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import dask
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    rows: list[dict] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    startup: dict[str, float] = {}
    roundtrip: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for w in args.workers:
            t0 = time.perf_counter()
            with dask.config.set({"distributed.scheduler.allowed-failures": 10}):
                cluster = LocalCluster(
                    n_workers=w,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            dc = DaskClient(cluster)
            _warm(dc, db)
            startup[f"{w}"] = round(time.perf_counter() - t0, 2)
            roundtrip[f"{w}"] = dask_roundtrip_ms(dc)
            try:
                # First-trial costs (imports, connections) are paid here, untimed.
                run_autotune(dc, db, "sleep-1s", w, 2 * w, "warmup")
                run_autotune(dc, db, "xgboost", w, 2 * w, "warmup")
                for workload, per_worker in (
                    ("sleep-1s", args.sleep_trials),
                    ("xgboost", args.xgb_trials),
                ):
                    n = per_worker * w
                    runs: dict[str, list[dict]] = {"autotune-dask": [], "optuna-threads": []}
                    for r in range(args.repeat):  # interleaved, so both see the same load
                        for row in (
                            run_autotune(dc, db, workload, w, n, f"m{r}"),
                            run_optuna(workload, w, n),
                        ):
                            runs[row["runner"]].append(row)
                            print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.extend(_median(v) for v in runs.values())
            finally:
                dc.close()
                cluster.close()

    # Scaling: time per trial on 1 worker over (workers x time per trial on w workers).
    for r in rows:
        one = next(
            (
                b
                for b in rows
                if b["runner"] == r["runner"]
                and b["workload"] == r["workload"]
                and b["workers"] == 1
            ),
            None,
        )
        if one is not None:
            r["scaling_vs_1_worker"] = round(
                (one["wall_s"] / one["trials"]) / (r["wall_s"] / r["trials"]) / r["workers"], 3
            )

    out = {
        "benchmark": "dask_runner",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # 1/5/15-minute load averages: the cores are shared, so this says how busy they were.
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "sleep_s": SLEEP_S,
            "sleep_trials_per_worker": args.sleep_trials,
            "xgb_trials_per_worker": args.xgb_trials,
            "repeats": args.repeat,
            "xgb_options": XGB_OPTIONS,
            "service": "embedded SQLite, random designer",
            "cluster_startup_s": startup,
            "dask_noop_roundtrip_ms": roundtrip,
        },
        "targets": {"efficiency_2_workers_sleep_1s": 0.9, "overhead_ms_per_trial": 20},
        "rows": rows,
    }
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        "| runner | workload | workers | trials | wall s | ideal s | efficiency | "
        "overhead ms/trial | fixed s/run | mean trial s | scaling vs 1 worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runner']} | {r['workload']} | {r['workers']} | {r['trials']} | {r['wall_s']} | "
            f"{r['ideal_s']} | {r['efficiency']} | {r['overhead_ms_per_trial']} | "
            f"{r['fixed_s']} | {r['mean_trial_s']} | {r.get('scaling_vs_1_worker', '')} |"
        )


if __name__ == "__main__":
    main()
