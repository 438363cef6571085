"""Optimizer quality and speed: AutoTune's designers against Optuna's samplers, in one run.

Problems (``benchmarks/problems.py``): Branin (2-D, 30 evaluations), Hartmann6 (60), Ackley 5-D
(60), Rosenbrock 4-D (60), Styblinski-Tang 8-D (80), Levy 10-D (80), a mixed integer/categorical
problem, Hartmann6 with noise, a conditional space, Gramacy's constrained problem and the
BraninCurrin two-objective problem. Optimizers: ``random``, ``sobol`` and ``auto`` through the
designer interface (no server), Optuna's TPESampler and GPSampler through ask/tell with the same
space (define-by-run for conditional parameters, ``set_constraint`` for constraints).

Scores: the best-so-far log10 regret of the noiseless objective over feasible points
(multi-objective: log10 of the hypervolume regret); the time of each suggestion (designer
``suggest``; Optuna ``ask`` plus the ``suggest_*`` calls), evaluation excluded. One more row
times ``auto`` at 1,000 completed Hartmann6 trials.

Writes ``benchmarks/results/optimizers.json``, ``benchmarks/results/optimizers_regret.html``
and the "## Optimizers" section of ``benchmarks/README.md``; ``--quick`` (2 seeds) only prints.

Usage: ``python benchmarks/optimizers.py [--quick] [--seeds N] [--problems a,b] [--optimizers
auto,gpsampler]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

# One thread per process for every library, set before NumPy/torch load: the pool runs two
# processes on two cores, and Optuna's GP (SciPy >= 1.15 L-BFGS-B calls OpenBLAS) slows down
# several-fold when OpenBLAS and torch's OpenMP threads contend. Both sides get the same setting.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from problems import BenchProblem, all_problems, hypervolume_2d  # noqa: E402

OPTIMIZERS = ["random", "sobol", "auto", "tpe", "gpsampler"]  # and "ax" where it is installed
RESULTS = ROOT / "results"
LOG_FLOOR = -8.0  # log10 regret below which we do not distinguish


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _log_regret(r: float) -> float:
    return max(math.log10(max(r, 1e-300)), LOG_FLOOR)


class _Tracker:
    """Best-so-far regret curve of one run."""

    def __init__(self, problem: BenchProblem) -> None:
        self.p = problem
        self.best = math.inf
        self.points: list[list[float]] = []
        self.curve: list[float] = []

    def add(self, params: dict[str, Any], values: dict[str, float]) -> None:
        p = self.p
        if p.is_multi:
            self.points.append([values[o] for o in p.objectives])
            hv = hypervolume_2d(np.array(self.points), p.ref_point)
            self.curve.append(_log_regret(p.hv_max - hv))
            self.hv = hv
            return
        if p.feasible(params):
            self.best = min(self.best, p.true_value(params))
        regret = p.infeasible_regret if math.isinf(self.best) else self.best - p.optimum
        self.curve.append(_log_regret(regret))


def _optuna_params(trial: Any, space: Any) -> dict[str, Any]:
    """Define-by-run: suggest every active parameter of our space through Optuna's trial."""
    from autotune.space import Categorical, Float

    out: dict[str, Any] = {}
    for name in space._order:
        if not space.is_active(name, out):
            continue
        p = space[name]
        if isinstance(p, Categorical):
            out[name] = trial.suggest_categorical(name, p.choices)
        elif isinstance(p, Float):
            out[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        else:
            out[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
    return {n: out[n] for n in space.names if n in out}


def _ax_client(p: BenchProblem, seed: int) -> Any:
    """Ax's ``Client`` on the same space: ranges (log scaling, integer and step kept),
    unordered choices with their dependent parameters for a conditional space (Ax's
    hierarchical search space), the same objectives and outcome constraints."""
    from ax.api.client import Client as AxClient
    from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig

    from autotune.space import Categorical, Float

    space = p.space
    children: dict[str, dict[Any, list[str]]] = {}
    for name in space._order:
        q = space[name]
        if q.condition:
            parent = next(iter(q.condition))
            for v in q.condition[parent]:
                children.setdefault(parent, {}).setdefault(v, []).append(name)
    configs: list[Any] = []
    for name in space._order:
        q = space[name]
        if isinstance(q, Categorical):
            configs.append(
                ChoiceParameterConfig(
                    name=name,
                    values=list(q.choices),
                    parameter_type="str",
                    is_ordered=False,
                    dependent_parameters=children.get(name),
                )
            )
        else:
            configs.append(
                RangeParameterConfig(
                    name=name,
                    bounds=(q.low, q.high),
                    parameter_type="float" if isinstance(q, Float) else "int",
                    # Ax's integers are on a unit grid already (and refuse a step with log)
                    step_size=None if q.step in (None, 1) else q.step,
                    scaling="log" if q.log else None,
                )
            )
    client = AxClient(random_seed=seed)
    client.configure_experiment(parameters=configs)
    client.configure_optimization(
        objective=", ".join(f"-{o}" for o in p.objectives),
        outcome_constraints=[f"{k} {c.op} {c.bound}" for k, c in p.constraints.items()] or None,
    )
    return client


def run_one(problem_name: str, optimizer: str, seed: int) -> dict[str, Any]:
    """One optimizer on one problem with one seed: the regret curve and suggestion times."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    p = all_problems()[problem_name]
    rng = np.random.default_rng([seed, 12345])  # evaluation noise, the same for every optimizer
    track = _Tracker(p)
    times: list[float] = []
    if optimizer in ("random", "sobol", "auto", "gp"):
        from autotune.designers import Problem, make_designer
        from autotune.models import Trial, TrialState

        designer = make_designer(optimizer)
        problem = Problem(space=p.space, objectives=p.directions, constraints=p.constraints)
        trials: list[Trial] = []
        for i in range(p.budget):
            t0 = time.perf_counter()
            [params] = designer.suggest(problem, completed=trials, pending=[], count=1, seed=seed)
            times.append(time.perf_counter() - t0)
            values = p.evaluate(params, rng)
            trials.append(Trial(number=i, state=TrialState.COMPLETED, params=params, values=values))
            track.add(params, values)
        info = designer.describe()
    elif optimizer == "ax":
        import logging

        client = _ax_client(p, seed)
        # Ax sets each of its loggers' level itself; its handler on "ax" is what prints.
        for handler in logging.getLogger("ax").handlers:
            handler.setLevel(logging.ERROR)
        for _ in range(p.budget):
            t0 = time.perf_counter()
            [(index, params)] = client.get_next_trials(max_trials=1).items()
            times.append(time.perf_counter() - t0)
            params = {n: params[n] for n in p.space.names if n in params}
            active = {n: v for n, v in params.items() if p.space.is_active(n, params)}
            values = p.evaluate(active, rng)
            client.complete_trial(trial_index=index, raw_data=values)
            track.add(active, values)
        info = {"designer": "ax", "version": _version("ax-platform")}
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler = (
            optuna.samplers.TPESampler(seed=seed)
            if optimizer == "tpe"
            else optuna.samplers.GPSampler(seed=seed)
        )
        study = optuna.create_study(directions=["minimize"] * len(p.objectives), sampler=sampler)
        for _ in range(p.budget):
            t0 = time.perf_counter()
            trial = study.ask()
            params = _optuna_params(trial, p.space)
            times.append(time.perf_counter() - t0)
            values = p.evaluate(params, rng)
            for k, c in p.constraints.items():
                trial.set_constraint(
                    k, values[k] - c.bound if c.op == "<=" else c.bound - values[k]
                )
            study.tell(trial, [values[o] for o in p.objectives])
            track.add(params, values)
        info = {"designer": optimizer}
    row = {
        "problem": p.name,
        "kind": p.kind,
        "optimizer": optimizer,
        "seed": seed,
        "budget": p.budget,
        "metric": "log10 hypervolume regret" if p.is_multi else "log10 regret",
        "final_log10_regret": track.curve[-1],
        "median_s": statistics.median(times),
        "p90_s": float(np.percentile(times, 90)),
        "curve": track.curve,
        "describe": info,
    }
    if p.is_multi:
        row["hypervolume"] = track.hv
    return row


def time_large_study(n_trials: int = 1000, n_timed: int = 5, seed: int = 0) -> dict[str, Any]:
    """Seconds per ``auto`` suggestion with ``n_trials`` completed Hartmann6 trials."""
    import torch

    torch.set_num_threads(1)
    from autotune.designers import Problem, make_designer
    from autotune.models import Trial, TrialState

    p = all_problems()["hartmann6"]
    problem = Problem(space=p.space)
    rng = np.random.default_rng(seed)
    trials = [
        Trial(number=i, state=TrialState.COMPLETED, params=x, values={"value": p.true_value(x)})
        for i, x in enumerate(p.space.sample(rng, n_trials))
    ]
    designer = make_designer("auto")
    times = []
    for _ in range(n_timed + 1):  # the first call fits from the prior, the others warm-start
        t0 = time.perf_counter()
        [x] = designer.suggest(problem, completed=trials, pending=[], count=1, seed=seed)
        times.append(time.perf_counter() - t0)
        trials.append(
            Trial(
                number=len(trials),
                state=TrialState.COMPLETED,
                params=x,
                values={"value": p.true_value(x)},
            )
        )
    return {
        "problem": f"hartmann6 at {n_trials} trials",
        "optimizer": "auto",
        "cold_s": times[0],
        "median_s": statistics.median(times[1:]),
        "max_s": max(times),
        "describe": designer.describe(),
    }


def time_precompute(n_trials: int = 40, seed: int = 0) -> dict[str, Any]:
    """Seconds per ``suggest`` through the embedded service on Hartmann6 (``auto``), with the
    background precompute and without it. A worker evaluates for longer than a suggestion
    takes to compute (as training does), modelled by waiting for the precompute to finish
    after each observe; the suggestions of the initial design are left out (cheap anyway)."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    from autotune.designers.gp import default_n_initial
    from autotune.service import StudyService

    p = all_problems()["hartmann6"]
    spec = {"name": "h6", "space": p.space.to_json(), "algorithm": "auto", "seed": seed}
    out: dict[str, Any] = {"problem": "hartmann6", "n_trials": n_trials}
    skip = default_n_initial(p.space.dim) + 1
    for precompute in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            svc = StudyService(f"sqlite:///{tmp}/bench.db", precompute=precompute)
            try:
                svc.create_study(spec)
                times = []
                for _ in range(n_trials):
                    t0 = time.perf_counter()
                    (trial,) = svc.suggest("h6").trials
                    times.append(time.perf_counter() - t0)
                    svc.observe("h6", trial.number, {"value": p.true_value(trial.params)})
                    svc.wait_precomputed(timeout=60)
            finally:
                svc.close()
        key = "with_precompute" if precompute else "without_precompute"
        out[key] = {
            "median_s": statistics.median(times[skip:]),
            "p90_s": float(np.percentile(times[skip:], 90)),
            "max_s": max(times[skip:]),
        }
    return out


# -- reporting ----------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(r["problem"], {}).setdefault(r["optimizer"], {"regrets": [], "times": []})
        cell = out[r["problem"]][r["optimizer"]]
        cell["regrets"].append(r["final_log10_regret"])  # type: ignore[attr-defined]
        cell["times"].append(r["median_s"])  # type: ignore[attr-defined]
    for prob in out.values():
        for cell in prob.values():
            cell["mean"] = float(np.mean(cell["regrets"]))
            cell["sem"] = float(np.std(cell["regrets"]) / math.sqrt(len(cell["regrets"])))
            cell["median_s"] = float(np.median(cell["times"]))
    return out


def markdown(
    summary: dict[str, Any],
    optimizers: list[str],
    large: dict | None,
    precomputed: dict | None = None,
) -> str:
    peers = [o for o in ("gpsampler", "ax") if o in optimizers]
    names = {"gpsampler": "GPSampler", "ax": "Ax"}
    head = "| problem | budget | " + " | ".join(optimizers) + " |"
    head += "".join(f" time auto / {names[o]} |" for o in peers)
    lines = [head, "|" + "---|" * (len(optimizers) + 2 + len(peers))]
    probs = all_problems()
    for name, cells in summary.items():
        vals = []
        means = {o: cells[o]["mean"] for o in optimizers if o in cells}
        best = min(means.values()) if means else None
        for o in optimizers:
            if o not in cells:
                vals.append("")
                continue
            s = f"{cells[o]['mean']:.2f} ± {cells[o]['sem']:.2f}"
            vals.append(f"**{s}**" if cells[o]["mean"] == best else s)
        ratios = []
        for o in peers:
            ratio = ""
            if "auto" in cells and o in cells and cells[o]["median_s"] > 0:
                a, g = cells["auto"]["median_s"], cells[o]["median_s"]
                ratio = f"{a / g:.2f} ({a * 1000:.0f} / {g * 1000:.0f} ms)"
            ratios.append(ratio)
        row = f"| {name} | {probs[name].budget} | " + " | ".join(vals) + " |"
        lines.append(row + "".join(f" {r} |" for r in ratios))
    text = "\n".join(lines)
    if large:
        text += (
            f"\n\n`auto` at 1,000 completed Hartmann6 trials: median "
            f"{large['median_s']:.3f} s per suggestion (first, cold fit: {large['cold_s']:.3f} s)."
        )
    if precomputed:
        w, wo = precomputed["with_precompute"], precomputed["without_precompute"]
        text += (
            f"\n\n`suggest` through the embedded service after an observe, Hartmann6, "
            f"{precomputed['n_trials']} trials, past the initial design: median "
            f"{w['median_s'] * 1000:.1f} ms (p90 {w['p90_s'] * 1000:.1f} ms) with the background "
            f"precompute, {wo['median_s'] * 1000:.1f} ms (p90 {wo['p90_s'] * 1000:.1f} ms) "
            "without it."
        )
    return text


def write_readme(section_body: str, title: str = "Optimizers") -> None:
    path = ROOT / "README.md"
    header = f"## {title}"
    section = f"{header}\n\n{section_body.strip()}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def write_html(rows: list[dict[str, Any]], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(r["problem"] for r in rows))
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    cols = 3
    fig = make_subplots(rows=math.ceil(len(names) / cols), cols=cols, subplot_titles=names)
    colors = dict(
        zip(OPTIMIZERS, ["#999999", "#66aa66", "#d62728", "#1f77b4", "#ff7f0e"], strict=True)
    )
    for k, name in enumerate(names):
        for o in opts:
            curves = [r["curve"] for r in rows if r["problem"] == name and r["optimizer"] == o]
            if not curves:
                continue
            mean = np.mean(np.array(curves), axis=0)
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(mean) + 1)),
                    y=mean.tolist(),
                    name=o,
                    legendgroup=o,
                    showlegend=k == 0,
                    line={"color": colors.get(o)},
                ),
                row=k // cols + 1,
                col=k % cols + 1,
            )
    fig.update_layout(
        title="Mean best-so-far log10 regret (multi-objective: log10 hypervolume regret)",
        height=300 * math.ceil(len(names) / cols),
    )
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, print only")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--problems", default=None, help="comma-separated names")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--workers", type=int, default=2, help="process pool size (at most 2)")
    ap.add_argument("--no-large", action="store_true", help="skip the 1,000-trial timing")
    ap.add_argument(
        "--name",
        default="optimizers",
        help="results/NAME.json, results/NAME_regret.html and the README section titled "
        "after it (default: optimizers, the main table)",
    )
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    names = args.problems.split(",") if args.problems else list(all_problems())
    optimizers = args.optimizers.split(",")
    probs = all_problems()
    unknown = [n for n in names if n not in probs]
    if unknown:
        ap.error(f"unknown problem(s) {unknown}; choose from {list(probs)}")

    # Longest problems first, so the pool of two ends together; within a problem and seed the
    # optimizers run back to back, so that the peers are timed under the same machine load.
    def weight(name: str) -> int:
        return -probs[name].budget * (2 if probs[name].is_multi else 1)

    tasks = [(n, o, s) for n in sorted(names, key=weight) for s in range(seeds) for o in optimizers]
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    workers = max(1, min(args.workers, 2))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, *t) for t in tasks]
        rows = []
        for i, f in enumerate(futures):
            rows.append(f.result())
            if (i + 1) % 20 == 0:
                print(
                    f"  {i + 1}/{len(tasks)} runs, {time.perf_counter() - t_start:.0f} s",
                    flush=True,
                )
        large = None if (args.no_large or args.quick) else pool.submit(time_large_study).result()
        precomputed = None if args.quick else pool.submit(time_precompute).result()
    rows.sort(
        key=lambda r: (names.index(r["problem"]), optimizers.index(r["optimizer"]), r["seed"])
    )
    summary = summarize(rows)
    table = markdown(summary, optimizers, large, precomputed)
    elapsed = time.perf_counter() - t_start
    print(table)
    print(f"\n{len(rows)} runs in {elapsed:.0f} s")
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "seeds": seeds,
        "elapsed_s": elapsed,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": 1,
        "workers": workers,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
    }
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps(
            {"meta": meta, "rows": rows, "large_study": large, "precompute": precomputed},
            indent=1,
        )
    )
    write_html(rows, RESULTS / f"{args.name}_regret.html")
    command = "python benchmarks/optimizers.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    body = (
        f"`{command}` ("
        f"{seeds} seeds, {meta['machine']}, 2 processes, torch on 1 thread each; "
        f"{elapsed / 60:.0f} min; 1-minute load average {load_start:.1f} at the start, "
        f"{meta['load_average_1min']['end']:.1f} at the end). Mean final log10 regret ± standard error over seeds, lower "
        "is better (branin_currin: log10 hypervolume regret). The last columns are the ratios "
        "of median seconds per suggestion, `auto` over each GP peer (all with their "
        f"initial designs). Curves: `results/{args.name}_regret.html`; rows: "
        f"`results/{args.name}.json`.\n\n" + table
    )
    title = "Optimizers" if args.name == "optimizers" else args.name.replace("_", " ").capitalize()
    title = title.replace(" ax", " Ax")
    write_readme(body, title)


if __name__ == "__main__":
    main()
