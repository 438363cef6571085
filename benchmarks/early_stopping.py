"""Early stopping: boosting rounds saved and quality kept, AutoTune's stoppers against Optuna's.

XGBoost studies on breast_cancer (validation log loss) and diabetes (validation RMSE), each seed a
study of ``--trials`` configurations of up to ``--rounds`` boosting rounds (XGBoost's own early
stopping off, so only the stopper ends a trial early). Rows, per system:

- AutoTune: random search with no stopper, median, ASHA (with its learning-curve guard, the
  default), ASHA without the guard (``extrapolation="none"``, plain ASHA) and Hyperband; and the
  ``auto`` designer with ASHA, which switches to BOHB-style sampling once three trials are pruned
  (multi-fidelity: new configurations drawn from a model of the cheap evaluations).
- Optuna: random search with NopPruner, MedianPruner, SuccessiveHalvingPruner at the same
  settings as ours and at its defaults, HyperbandPruner; and TPE with SuccessiveHalvingPruner.

The random-search rows isolate the stopper: every such row of one seed sees the same
configurations in the same order (AutoTune's random designer's stream for the seed; Optuna gets
them through ``enqueue_trial``), the same data splits and the same XGBoost seed per trial, and the
stoppers' settings match (same rungs, reduction factor, warm-up). The model-based rows have the
same budget (trials, rounds, stopper) but choose their own configurations.

Learning curves are computed once: XGBoost with a fixed seed and one thread is deterministic, so a
trial stopped at round ``k`` has exactly the first ``k`` values of the same configuration trained
to the end. Each configuration is trained once (to the end, or as far as a stopper lets it when
no row trained it before) and every row replays its curve round by round to its stopper, as
tabular benchmarks such as LCBench and HPOBench do; the rounds a row *spends* are the rounds its
stopper let run. The stoppers are called as the pure functions the service calls under the study
lock (``autotune.stoppers``; designers likewise), Optuna's pruners through its ask/tell with
``trial.report``/``should_prune``; ``--check-service`` also replays one seed's ASHA row through
AutoTune's embedded service and checks it decides the same. Measured per row, summed or averaged
over seeds: boosting rounds spent, the best validation metric among completed trials, and the
test metric of that trial's model (retrained on the training split for the rounds it ran; that
refit is not counted). Results go to ``benchmarks/results/early_stopping.json``.

Usage: ``python benchmarks/early_stopping.py [--quick] [--seeds 10] [--trials 30] [--rounds 100]``
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import autotune  # noqa: E402
from autotune.designers import make_designer  # noqa: E402
from autotune.designers._base import Problem  # noqa: E402
from autotune.models import Direction, Measurement, Trial, TrialState  # noqa: E402
from autotune.space import SearchSpace  # noqa: E402
from autotune.stoppers import Curve, make_stopper  # noqa: E402
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
# (20, 40, 80 of 100). Chosen before the learning-curve guard existed, on a sweep of Optuna's
# SuccessiveHalvingPruner alone (eta 2 and 3, first rung 5, 10, 20): eta 3 or earlier rungs save
# more rounds but prune the slow starters that end best (small eta), and lose more validation
# metric. Kept as they were so that the guard is compared on the same rungs.
ETA = 2
MIN_RESOURCE = 20
MEDIAN_STARTUP = 5  # finished trials before the median rule stops anything
MEDIAN_WARMUP = 10  # steps before the median rule may stop a trial

# (system, stopper, sampler): the rows of one seed, in the order they run.
ROWS = (
    ("autotune", "none", "random"),
    ("autotune", "median", "random"),
    ("autotune", "asha", "random"),
    ("autotune", "asha_plain", "random"),
    ("autotune", "hyperband", "random"),
    ("autotune", "asha", "auto"),
    ("optuna", "none", "random"),
    ("optuna", "median", "random"),
    ("optuna", "asha", "random"),
    ("optuna", "asha_default", "random"),
    ("optuna", "hyperband", "random"),
    ("optuna", "asha", "tpe"),
)
LABELS = {
    ("autotune", "none", "random"): "random, no stopper",
    ("autotune", "median", "random"): "random + median",
    ("autotune", "asha", "random"): "random + ASHA (guard, default)",
    ("autotune", "asha_plain", "random"): "random + ASHA, no guard",
    ("autotune", "hyperband", "random"): "random + Hyperband",
    ("autotune", "asha", "auto"): "auto + ASHA (BOHB switch)",
    ("optuna", "none", "random"): "random + NopPruner",
    ("optuna", "median", "random"): "random + MedianPruner",
    ("optuna", "asha", "random"): "random + SuccessiveHalving (same rungs)",
    ("optuna", "asha_default", "random"): "random + SuccessiveHalving (defaults)",
    ("optuna", "hyperband", "random"): "random + HyperbandPruner",
    ("optuna", "asha", "tpe"): "TPE + SuccessiveHalving (same rungs)",
}


@dataclass
class Row:
    system: str
    stopper: str
    sampler: str
    dataset: str
    seed: int
    rounds: int
    pruned: int
    completed: int
    best_valid: float
    test: float
    best_params: dict[str, Any]
    seconds: float  # stopper and sampler time, not training (curves are replayed)


def autotune_stopper(kind: str, rounds: int) -> dict[str, Any] | None:
    asha = {"type": "asha", "min_resource": MIN_RESOURCE, "reduction_factor": ETA}
    return {
        "none": None,
        "median": {
            "type": "median",
            "min_trials": MEDIAN_STARTUP,
            "warmup_steps": MEDIAN_WARMUP - 1,  # ours: no stop at step <= warmup
        },
        "asha": asha,
        "asha_plain": {**asha, "extrapolation": "none"},
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
        # min_resource "auto" (rounds of the first finished trial / 100), reduction factor 4.
        "asha_default": lambda: optuna.pruners.SuccessiveHalvingPruner(),
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


@dataclass
class Lab:
    """One dataset's splits, and every learning curve and test metric computed so far."""

    data: TrainData
    test: tuple[np.ndarray, np.ndarray]
    rounds: int
    curves: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    tests: dict[tuple[str, int, int], float] = field(default_factory=dict)
    trained: int = 0  # boosting rounds really trained (curves and refits), for the log

    @property
    def metric(self) -> str:
        return PROBLEMS[self.data.name]

    def trainer(self, rounds: int | None = None) -> XGBoostTrainer:
        return XGBoostTrainer(num_boost_round=rounds or self.rounds, early_stopping_rounds=None)

    def run(
        self, params: dict[str, Any], seed: int, stop: Callable[[int, float], bool]
    ) -> tuple[int, bool]:
        """Rounds spent by a trial whose stopper is ``stop(step, value)``, and whether it was
        stopped: the configuration's curve replayed round by round, trained first (as far as
        the stopper lets it) if no row has trained it to the end yet."""
        key = (json.dumps(params, sort_keys=True), seed)
        curve = self.curves.get(key)
        if curve is not None and len(curve) == self.rounds:
            for step, value in enumerate(curve):
                if stop(step, value):
                    return step + 1, True
            return self.rounds, False
        values: list[float] = []

        def report(step: int, value: float) -> bool:
            values.append(value)
            return stop(step, value)

        result = self.trainer().fit(
            {**FIXED, **params}, self.data, reporter=_Fn(report), metric=self.metric, seed=seed
        )
        self.trained += result.steps
        if len(values) > len(self.curves.get(key, [])):
            self.curves[key] = values
        return result.steps, result.stopped

    def final(self, params: dict[str, Any], seed: int) -> float:
        return self.curves[(json.dumps(params, sort_keys=True), seed)][-1]

    def test_metric(self, params: dict[str, Any], *, seed: int, steps: int) -> float:
        """The test metric of the trial's model: the same configuration, seed and rounds."""
        import xgboost as xgb

        key = (json.dumps(params, sort_keys=True), seed, steps)
        if key not in self.tests:
            result = self.trainer(steps).fit(
                {**FIXED, **params}, self.data, reporter=NullReporter(), seed=seed
            )
            self.trained += steps
            booster = xgb.Booster()
            assert result.artifact is not None
            booster.load_model(bytearray(result.artifact.data))
            X, y = self.test
            pred = booster.predict(xgb.DMatrix(X))
            if self.data.task == "classification":
                pred = np.column_stack([1.0 - pred, pred])
            self.tests[key] = evaluate(self.data.task, y, pred)[self.metric]
        return self.tests[key]


def _row(lab: Lab, key: tuple[str, str, str], seed: int, trials: list[tuple[Any, ...]],
         seconds: float) -> Row:  # fmt: skip
    """trials: (params, xgb seed, rounds spent, completed?) in order."""
    done = [t for t in trials if t[3]]
    params, xseed, steps, _ = min(done, key=lambda t: lab.final(t[0], t[1]))
    system, stopper, sampler = key
    return Row(
        system=system,
        stopper=stopper,
        sampler=sampler,
        dataset=lab.data.name,
        seed=seed,
        rounds=sum(t[2] for t in trials),
        pruned=len(trials) - len(done),
        completed=len(done),
        best_valid=lab.final(params, xseed),
        test=lab.test_metric(params, seed=xseed, steps=steps),
        best_params=params,
        seconds=seconds,
    )


def run_autotune(lab: Lab, stopper: str, sampler: str, seed: int, n_trials: int) -> Row:
    """AutoTune's stopper (and, for ``auto``, designer) as the pure functions the service calls:
    the curves of the study's earlier trials as ``others``, finished ones as ``completed``."""
    rule = make_stopper(autotune_stopper(stopper, lab.rounds))
    problem = Problem(space=SearchSpace(SPACE), objectives={lab.metric: Direction.MINIMIZE})
    designer = make_designer("auto") if sampler == "auto" else None
    fixed = configs(seed, n_trials)
    curves: list[Curve] = []
    finished: list[Trial] = []
    trials: list[tuple[Any, ...]] = []
    busy = 0.0
    for i in range(n_trials):
        t0 = time.perf_counter()
        if designer is None:
            params = fixed[i]
        else:
            (params,) = designer.suggest(
                problem, completed=finished, pending=[], count=1, seed=seed
            )
        busy += time.perf_counter() - t0
        mine: dict[int, float] = {}

        def stop(step: int, value: float, n: int = i, mine: dict[int, float] = mine) -> bool:
            nonlocal busy
            mine[step] = value
            t0 = time.perf_counter()
            out = rule.should_stop(
                Curve(n, TrialState.RUNNING, mine), curves, direction=Direction.MINIMIZE
            )
            busy += time.perf_counter() - t0
            return out

        steps, stopped = lab.run(params, seed * 1000 + i, stop)
        state = TrialState.PRUNED if stopped else TrialState.COMPLETED
        curves.append(Curve(i, state, dict(mine)))
        finished.append(
            Trial(
                number=i,
                state=state,
                params=params,
                values={lab.metric: mine[max(mine)]},
                intermediate=[Measurement(step=s, value=v) for s, v in sorted(mine.items())],
            )
        )
        trials.append((params, seed * 1000 + i, steps, state == TrialState.COMPLETED))
    return _row(lab, ("autotune", stopper, sampler), seed, trials, busy)


def run_optuna(lab: Lab, stopper: str, sampler: str, seed: int, n_trials: int) -> Row:
    import optuna

    study = optuna.create_study(
        study_name=f"es_{lab.data.name}_{stopper}_{sampler}_{seed}",
        direction="minimize",
        sampler=(
            optuna.samplers.TPESampler(seed=seed)
            if sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=seed)
        ),
        pruner=optuna_pruner(stopper, lab.rounds),
    )
    if sampler == "random":
        for cfg in configs(seed, n_trials):
            study.enqueue_trial(cfg)
    trials: list[tuple[Any, ...]] = []
    busy = 0.0
    for i in range(n_trials):
        t0 = time.perf_counter()
        trial = study.ask()
        params = {
            name: (
                trial.suggest_int(name, p["low"], p["high"])
                if p["type"] == "int"
                else trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
            )
            for name, p in SPACE.items()
        }
        busy += time.perf_counter() - t0
        last: list[float] = []

        def stop(step: int, value: float, t: Any = trial, last: list[float] = last) -> bool:
            nonlocal busy
            last[:] = [value]
            t0 = time.perf_counter()
            t.report(value, step)
            out = t.should_prune()
            busy += time.perf_counter() - t0
            return bool(out)

        steps, stopped = lab.run(params, seed * 1000 + i, stop)
        t0 = time.perf_counter()
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, last[0])
        busy += time.perf_counter() - t0
        trials.append((params, seed * 1000 + i, steps, not stopped))
    return _row(lab, ("optuna", stopper, sampler), seed, trials, busy)


def check_service(lab: Lab, seed: int, n_trials: int, expected: Row) -> None:
    """Replays the seed's random + ASHA study through AutoTune's embedded service (suggest ->
    report per round -> observe) and checks it spends the rounds the pure stopper did."""
    metric = lab.metric
    spent = 0
    with autotune.Client(db="sqlite://") as client:
        study = client.create_study(
            name=f"es_check_{lab.data.name}_{seed}",
            space=SPACE,
            objectives={metric: "minimize"},
            algorithm="random",
            seed=seed,
            max_trials=n_trials,
            stopper=autotune_stopper("asha", lab.rounds),
        )
        for i, cfg in enumerate(configs(seed, n_trials)):
            (trial,) = study.suggest(1)
            assert trial.params == cfg, "the random designer's stream changed"
            number = trial.number
            steps, stopped = lab.run(
                cfg, seed * 1000 + i, lambda s, v, n=number: study.report(n, s, v)
            )
            spent += steps
            if not stopped:
                study.observe(number, {metric: lab.final(cfg, seed * 1000 + i)})
        best = study.best_trial
    assert spent == expected.rounds, (spent, expected.rounds)
    assert best.params == expected.best_params, (best.params, expected.best_params)


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    """Per dataset and row kind: rounds summed over seeds, metrics averaged, the ratios to the
    same system's no-stopper row, and each seed's own ratio (its spread)."""
    out = []
    for dataset in PROBLEMS:
        for key in ROWS:
            system, stopper, sampler = key
            sel = sorted(
                (r for r in rows if (r.dataset, r.system, r.stopper, r.sampler) == (dataset, *key)),
                key=lambda r: r.seed,
            )
            ref = {
                r.seed: r
                for r in rows
                if (r.dataset, r.system, r.stopper, r.sampler)
                == (dataset, system, "none", "random")
            }
            if not sel or not ref:
                continue
            seeds = [r.seed for r in sel]
            ref_rounds = sum(ref[s].rounds for s in seeds)
            ref_valid = statistics.fmean(ref[s].best_valid for s in seeds)
            valid = statistics.fmean(r.best_valid for r in sel)
            per_seed = [r.best_valid / ref[r.seed].best_valid - 1.0 for r in sel]
            out.append(
                {
                    "dataset": dataset,
                    "metric": PROBLEMS[dataset],
                    "system": system,
                    "stopper": stopper,
                    "sampler": sampler,
                    "label": LABELS[key],
                    "seeds": len(sel),
                    "rounds": sum(r.rounds for r in sel),
                    "rounds_saved": 1.0 - sum(r.rounds for r in sel) / ref_rounds,
                    "pruned": sum(r.pruned for r in sel),
                    "best_valid": valid,
                    "valid_vs_none": valid / ref_valid - 1.0,
                    "per_seed_vs_none": per_seed,
                    "per_seed_sd": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
                    "worst_seed_vs_none": max(per_seed),
                    "seeds_within_1pct": sum(p <= 0.01 for p in per_seed),
                    "test": statistics.fmean(r.test for r in sel),
                    "seconds": sum(r.seconds for r in sel),
                }
            )
    return out


def targets(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 5: ASHA within 1% of no stopping on best validation, >= 40% fewer rounds, and at
    least as good as Optuna's SuccessiveHalvingPruner (validation metric, per dataset), both at
    the same settings and at its defaults."""
    res = {}
    for dataset in PROBLEMS:
        get = {
            (s["system"], s["stopper"], s["sampler"]): s for s in summary if s["dataset"] == dataset
        }
        ours = get.get(("autotune", "asha", "random"))
        if ours is None:
            continue
        sha = get.get(("optuna", "asha", "random"))
        sha_default = get.get(("optuna", "asha_default", "random"))
        res[dataset] = {
            "within_1pct": ours["valid_vs_none"] <= 0.01,
            "saved_40pct": ours["rounds_saved"] >= 0.40,
            "at_least_optuna_sha": sha is None or ours["best_valid"] <= sha["best_valid"],
            "at_least_optuna_sha_defaults": sha_default is None
            or ours["best_valid"] <= sha_default["best_valid"],
        }
    return res


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset (metric) | system | sampler + stopper | rounds (saved) | best valid (vs none) "
        "| per seed vs none: sd, worst, within 1% | test |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['dataset']} ({s['metric']}) | {'AutoTune' if s['system'] == 'autotune' else 'Optuna'} "
            f"| {s['label']} | {s['rounds']} ({s['rounds_saved']:.0%}) "
            f"| {s['best_valid']:.4f} ({s['valid_vs_none']:+.1%}) "
            f"| {s['per_seed_sd']:.1%}, {s['worst_seed_vs_none']:+.1%}, "
            f"{s['seeds_within_1pct']}/{s['seeds']} | {s['test']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 12 trials, 60 rounds")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--min-resource", type=int, default=MIN_RESOURCE, help="step of the first rung")
    ap.add_argument("--datasets", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument(
        "--check-service",
        action="store_true",
        help="also replay seed 0's random + ASHA study through the embedded service",
    )
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
    trained = 0
    for dataset in args.datasets:
        splits = split_dataset(load_dataset(dataset), valid_fraction=0.2, test_fraction=0.2, seed=0)
        lab = Lab(data=splits.tuning_data(), test=splits.holdout(), rounds=args.rounds)
        for seed in range(args.seeds):
            for key in ROWS:
                system, stopper, sampler = key
                run = run_autotune if system == "autotune" else run_optuna
                row = run(lab, stopper, sampler, seed, args.trials)
                rows.append(row)
                print(
                    f"{dataset} seed {seed} {LABELS[key]:40s} rounds {row.rounds:5d} "
                    f"pruned {row.pruned:2d} best {row.best_valid:.4f} test {row.test:.4f} "
                    f"({row.seconds:.1f} s; {time.perf_counter() - start:.0f} s so far)",
                    file=sys.stderr,
                    flush=True,
                )
        if args.check_service:
            ours = next(
                r for r in rows
                if (r.dataset, r.system, r.stopper, r.sampler, r.seed)
                == (dataset, "autotune", "asha", "random", 0)
            )  # fmt: skip
            check_service(lab, 0, args.trials, ours)
            print(f"{dataset}: the service decided as the pure stopper", file=sys.stderr)
        trained += lab.trained
    summary = summarize(rows)
    result = {
        "benchmark": "early_stopping",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": list(__import__("os").getloadavg()),
        },
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
            "autotune_stoppers": {
                k: autotune_stopper(k, args.rounds)
                for k in ("none", "median", "asha", "asha_plain", "hyperband")
            },
            "service_checked": args.check_service,
        },
        "elapsed_s": time.perf_counter() - start,
        "rounds_trained": trained,
        "summary": summary,
        "targets": targets(summary),
        "rows": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(summary))
    print(json.dumps(result["targets"], indent=2))
    print(f"elapsed {result['elapsed_s']:.0f} s, {trained} rounds trained -> {args.out}")


if __name__ == "__main__":
    main()
