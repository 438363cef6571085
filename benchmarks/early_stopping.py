"""Early stopping: boosting rounds saved and quality kept, AutoTune's stoppers against Optuna's.

XGBoost studies on breast_cancer (validation log loss) and diabetes (validation RMSE), each seed a
study of ``--trials`` random configurations of up to ``--rounds`` boosting rounds (XGBoost's own
early stopping off, so only the stopper ends a trial early). Rows: no stopper, median, ASHA and
Hyperband through AutoTune's service (embedded, in-memory SQLite; the in-process loop suggest ->
``trainers.xgboost`` with a report per round -> observe), and Optuna's NopPruner, MedianPruner,
SuccessiveHalvingPruner and HyperbandPruner (ask/tell with ``trial.report``/``should_prune``).

The comparison isolates the stopper: every row of one seed sees the same configurations in the
same order (AutoTune's random designer with the study's seed, which depends only on the seed and
the trial's number; Optuna gets the same ones through ``enqueue_trial`` under a seeded
``RandomSampler``), the same data splits and the same XGBoost seed per trial, and the stoppers'
settings match (same rungs, reduction factor, warm-up). Measured per row, summed or averaged over
seeds: boosting rounds trained, the best validation metric among completed trials, and the test
metric of that trial's model (retrained on the training split for the rounds it ran; that refit
is not counted). Results go to ``benchmarks/results/early_stopping.json``.

Usage: ``python benchmarks/early_stopping.py [--quick] [--seeds 5] [--trials 30] [--rounds 100]``
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import autotune  # noqa: E402
from autotune.space import SearchSpace  # noqa: E402
from trainers import load_dataset, split_dataset  # noqa: E402
from trainers._base import NullReporter, TrainData, evaluate  # noqa: E402
from trainers.xgboost import XGBoostTrainer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "early_stopping.json"

SPACE = {
    "eta": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
    "max_depth": {"type": "int", "low": 2, "high": 10},
    "min_child_weight": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    "subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
    "lambda": {"type": "float", "low": 0.001, "high": 10.0, "log": True},
}
FIXED = {"tree_method": "hist", "nthread": 1}
PROBLEMS = {"breast_cancer": "log_loss", "diabetes": "rmse"}
# Shared by both systems. Steps are 0-based boosting rounds; ASHA's rungs at MIN_RESOURCE * ETA**k
# (20, 40, 80 of 100). Chosen on a sweep of Optuna's SuccessiveHalvingPruner alone (eta 2 and 3,
# first rung 5, 10, 20): eta 3 or earlier rungs save more rounds but prune the slow starters that
# end best (small eta), and lose more validation metric.
ETA = 2
MIN_RESOURCE = 20
MEDIAN_STARTUP = 5  # finished trials before the median rule stops anything
MEDIAN_WARMUP = 10  # steps before the median rule may stop a trial
STOPPERS = ("none", "median", "asha", "hyperband")


@dataclass
class Row:
    system: str
    stopper: str
    dataset: str
    seed: int
    rounds: int
    pruned: int
    completed: int
    best_valid: float
    test: float
    best_params: dict[str, Any]
    seconds: float


def autotune_stopper(kind: str, rounds: int) -> dict[str, Any] | None:
    return {
        "none": None,
        "median": {
            "type": "median",
            "min_trials": MEDIAN_STARTUP,
            "warmup_steps": MEDIAN_WARMUP - 1,  # ours: no stop at step <= warmup
        },
        "asha": {"type": "asha", "min_resource": MIN_RESOURCE, "reduction_factor": ETA},
        "hyperband": {
            "type": "hyperband",
            "min_resource": MIN_RESOURCE,
            "max_resource": rounds,
            "reduction_factor": ETA,
        },
    }[kind]


def optuna_pruner(kind: str, rounds: int) -> Any:
    import optuna

    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=MEDIAN_WARMUP
        ),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=MIN_RESOURCE, reduction_factor=ETA, min_early_stopping_rate=0
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=MIN_RESOURCE, max_resource=rounds, reduction_factor=ETA
        ),
    }[kind]()


def configs(seed: int, n: int) -> list[dict[str, Any]]:
    """The configurations AutoTune's random designer hands out, in order, for this seed (its
    stream is keyed by the seed and the number of earlier trials)."""
    space = SearchSpace(SPACE)
    return [space.sample(np.random.default_rng([seed, i]), 1)[0] for i in range(n)]


class _Fn:
    def __init__(self, fn: Callable[[int, float], bool]) -> None:
        self.report = fn


def _test_metric(
    trainer: XGBoostTrainer,
    params: dict[str, Any],
    *,
    seed: int,
    steps: int,
    data: TrainData,
    test: tuple[np.ndarray, np.ndarray],
) -> float:
    import xgboost as xgb

    # The same configuration, seed and number of rounds as the trial: the same model.
    opts = {**FIXED, **params, "num_boost_round": steps}
    result = trainer.fit(opts, data, reporter=NullReporter(), seed=seed)
    booster = xgb.Booster()
    assert result.artifact is not None
    booster.load_model(bytearray(result.artifact.data))
    X, y = test
    pred = booster.predict(xgb.DMatrix(X))
    if data.task == "classification":
        pred = np.column_stack([1.0 - pred, pred])
    return evaluate(data.task, y, pred)[PROBLEMS[data.name]]


def run_autotune(
    kind: str, dataset: str, seed: int, n_trials: int, rounds: int, data: TrainData, test: Any
) -> Row:
    metric = PROBLEMS[dataset]
    trainer = XGBoostTrainer(num_boost_round=rounds, early_stopping_rounds=None)
    expected = configs(seed, n_trials)
    t0 = time.perf_counter()
    spent = 0
    steps_of: dict[int, int] = {}
    with autotune.Client(db="sqlite://") as client:
        study = client.create_study(
            name=f"es_{dataset}_{kind}_{seed}",
            space=SPACE,
            objectives={metric: "minimize"},
            algorithm="random",
            seed=seed,
            max_trials=n_trials,
            stopper=autotune_stopper(kind, rounds),
        )
        for i in range(n_trials):
            (trial,) = study.suggest(1)
            assert trial.params == expected[i], "the random designer's stream changed"
            number = trial.number
            result = trainer.fit(
                {**FIXED, **trial.params},
                data,
                reporter=_Fn(lambda step, value, n=number: study.report(n, step, value)),
                metric=metric,
                seed=seed * 1000 + i,
            )
            spent += result.steps
            steps_of[number] = result.steps
            if not result.stopped:
                study.observe(number, {metric: result.metrics[metric]})
        trials = study.trials()
        best = study.best_trial
    seconds = time.perf_counter() - t0
    return Row(
        system="autotune",
        stopper=kind,
        dataset=dataset,
        seed=seed,
        rounds=spent,
        pruned=sum(t.state.value == "pruned" for t in trials),
        completed=sum(t.state.value == "completed" for t in trials),
        best_valid=float(best.values[metric]),
        test=_test_metric(
            trainer,
            best.params,
            seed=seed * 1000 + best.number,
            steps=steps_of[best.number],
            data=data,
            test=test,
        ),
        best_params=best.params,
        seconds=seconds,
    )


def run_optuna(
    kind: str, dataset: str, seed: int, n_trials: int, rounds: int, data: TrainData, test: Any
) -> Row:
    import optuna

    metric = PROBLEMS[dataset]
    trainer = XGBoostTrainer(num_boost_round=rounds, early_stopping_rounds=None)
    study = optuna.create_study(
        study_name=f"es_{dataset}_{kind}_{seed}",
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna_pruner(kind, rounds),
    )
    for cfg in configs(seed, n_trials):
        study.enqueue_trial(cfg)
    t0 = time.perf_counter()
    spent = 0
    steps_of: dict[int, int] = {}
    for i in range(n_trials):
        trial = study.ask()
        params = {
            name: (
                trial.suggest_int(name, p["low"], p["high"])
                if p["type"] == "int"
                else trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
            )
            for name, p in SPACE.items()
        }

        def report(step: int, value: float, t: Any = trial) -> bool:
            t.report(value, step)
            return t.should_prune()

        result = trainer.fit(
            {**FIXED, **params}, data, reporter=_Fn(report), metric=metric, seed=seed * 1000 + i
        )
        spent += result.steps
        steps_of[trial.number] = result.steps
        if result.stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, result.metrics[metric])
    seconds = time.perf_counter() - t0
    best = study.best_trial
    states = [t.state for t in study.trials]
    return Row(
        system="optuna",
        stopper=kind,
        dataset=dataset,
        seed=seed,
        rounds=spent,
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        completed=states.count(optuna.trial.TrialState.COMPLETE),
        best_valid=float(best.value),
        test=_test_metric(
            trainer,
            best.params,
            seed=seed * 1000 + best.number,
            steps=steps_of[best.number],
            data=data,
            test=test,
        ),
        best_params=best.params,
        seconds=seconds,
    )


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    """Per dataset, system and stopper: rounds summed over seeds, metrics averaged, and the
    ratios to the same system's no-stopper row."""
    out = []
    for dataset in PROBLEMS:
        for system in ("autotune", "optuna"):
            base = [r for r in rows if r.dataset == dataset and r.system == system]
            if not base:
                continue
            ref = [r for r in base if r.stopper == "none"]
            ref_rounds = sum(r.rounds for r in ref)
            ref_valid = statistics.fmean(r.best_valid for r in ref)
            for kind in STOPPERS:
                sel = [r for r in base if r.stopper == kind]
                if not sel:
                    continue
                rounds = sum(r.rounds for r in sel)
                valid = statistics.fmean(r.best_valid for r in sel)
                out.append(
                    {
                        "dataset": dataset,
                        "metric": PROBLEMS[dataset],
                        "system": system,
                        "stopper": kind,
                        "seeds": len(sel),
                        "rounds": rounds,
                        "rounds_saved": 1.0 - rounds / ref_rounds,
                        "pruned": sum(r.pruned for r in sel),
                        "best_valid": valid,
                        "valid_vs_none": valid / ref_valid - 1.0,
                        "test": statistics.fmean(r.test for r in sel),
                        "seconds": sum(r.seconds for r in sel),
                    }
                )
    return out


def targets(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 5: ASHA within 1% of no stopping on best validation, >= 40% fewer rounds, and at
    least as good as Optuna's SuccessiveHalvingPruner (validation metric, per dataset)."""
    res = {}
    for dataset in PROBLEMS:
        get = {
            (s["system"], s["stopper"]): s
            for s in summary
            if s["dataset"] == dataset and s["stopper"] in ("asha",)
        }
        ours, theirs = get.get(("autotune", "asha")), get.get(("optuna", "asha"))
        if ours is None:
            continue
        res[dataset] = {
            "within_1pct": ours["valid_vs_none"] <= 0.01,
            "saved_40pct": ours["rounds_saved"] >= 0.40,
            "at_least_optuna_sha": theirs is None or ours["best_valid"] <= theirs["best_valid"],
        }
    return res


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset (metric) | stopper | AutoTune rounds (saved) | best valid | test "
        "| Optuna rounds (saved) | best valid | test |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "none": "none / NopPruner",
        "median": "median / MedianPruner",
        "asha": "asha / SuccessiveHalvingPruner",
        "hyperband": "hyperband / HyperbandPruner",
    }
    for dataset, metric in PROBLEMS.items():
        for kind in STOPPERS:
            cells = []
            for system in ("autotune", "optuna"):
                s = next(
                    (
                        x
                        for x in summary
                        if (x["dataset"], x["system"], x["stopper"]) == (dataset, system, kind)
                    ),
                    None,
                )
                if s is None:
                    cells += ["-", "-", "-"]
                    continue
                cells += [
                    f"{s['rounds']} ({s['rounds_saved']:.0%})",
                    f"{s['best_valid']:.4f} ({s['valid_vs_none']:+.1%})",
                    f"{s['test']:.4f}",
                ]
            lines.append(f"| {dataset} ({metric}) | {names[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 12 trials, 60 rounds")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--min-resource", type=int, default=MIN_RESOURCE, help="step of the first rung")
    ap.add_argument("--datasets", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.trials, args.rounds = 2, 12, 60
    globals()["MIN_RESOURCE"] = args.min_resource  # read by the stopper factories
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("autotune").setLevel(logging.WARNING)

    rows: list[Row] = []
    start = time.perf_counter()
    for dataset in args.datasets:
        splits = split_dataset(load_dataset(dataset), valid_fraction=0.2, test_fraction=0.2, seed=0)
        data = splits.tuning_data()
        test = splits.holdout()
        for seed in range(args.seeds):
            for kind in STOPPERS:
                for run in (run_autotune, run_optuna):
                    row = run(kind, dataset, seed, args.trials, args.rounds, data, test)
                    rows.append(row)
                    print(
                        f"{dataset} seed {seed} {row.system:8s} {kind:9s} rounds {row.rounds:5d} "
                        f"pruned {row.pruned:2d} best {row.best_valid:.4f} test {row.test:.4f} "
                        f"({row.seconds:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    summary = summarize(rows)
    result = {
        "benchmark": "early_stopping",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "seeds": args.seeds,
            "trials": args.trials,
            "rounds": args.rounds,
            "space": SPACE,
            "fixed": FIXED,
            "reduction_factor": ETA,
            "min_resource": args.min_resource,
            "median_startup_trials": MEDIAN_STARTUP,
            "median_warmup_steps": MEDIAN_WARMUP,
            "autotune_stoppers": {k: autotune_stopper(k, args.rounds) for k in STOPPERS},
        },
        "elapsed_s": time.perf_counter() - start,
        "summary": summary,
        "targets": targets(summary),
        "rows": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(summary))
    print(json.dumps(result["targets"], indent=2))
    print(f"elapsed {result['elapsed_s']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
