"""Test problems for ``benchmarks/optimizers.py``: the space, what is optimized, the budget and
the known optimum, as plain Python (no optimizer library needed).

Every problem minimizes. ``evaluate(params, rng)`` returns the metrics a trial reports (noise,
when the problem has it, is drawn from ``rng``); ``true_value(params)`` is the noiseless
objective the regret is measured on; a constrained problem's point counts only when feasible.
Multi-objective problems are scored by hypervolume regret (``hv_max - hv``) instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune.models import Constraint, Direction
from autotune.space import Categorical, Float, Int, SearchSpace

Params = dict[str, Any]


@dataclass(frozen=True)
class BenchProblem:
    name: str
    space: SearchSpace
    budget: int
    true_value: Callable[[Params], float]  # noiseless objective (single objective)
    optimum: float = 0.0
    noise_sd: float = 0.0
    objectives: tuple[str, ...] = ("value",)
    constraints: dict[str, Constraint] = field(default_factory=dict)
    constraint_values: Callable[[Params], dict[str, float]] | None = None
    multi: Callable[[Params], dict[str, float]] | None = None  # multi-objective metrics
    ref_point: tuple[float, ...] = ()  # for the hypervolume (minimization)
    hv_max: float = 0.0
    infeasible_regret: float = 1.0  # regret charged while no feasible point is known
    kind: str = "continuous"

    @property
    def is_multi(self) -> bool:
        return self.multi is not None

    @property
    def directions(self) -> dict[str, Direction]:
        return {o: Direction.MINIMIZE for o in self.objectives}

    def evaluate(self, params: Params, rng: np.random.Generator) -> dict[str, float]:
        if self.multi is not None:
            out = dict(self.multi(params))
        else:
            v = self.true_value(params)
            if self.noise_sd:
                v += float(rng.normal(0.0, self.noise_sd))
            out = {"value": v}
        if self.constraint_values is not None:
            out.update(self.constraint_values(params))
        return out

    def feasible(self, params: Params) -> bool:
        if self.constraint_values is None:
            return True
        vals = self.constraint_values(params)
        return all(c.satisfied(vals[k]) for k, c in self.constraints.items())


def _vec(p: Params, n: int) -> np.ndarray:
    return np.array([p[f"x{i}"] for i in range(n)], dtype=float)


def _box(n: int, lo: float, hi: float) -> SearchSpace:
    return SearchSpace({f"x{i}": Float(lo, hi) for i in range(n)})


# -- continuous ---------------------------------------------------------------------------------
def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H_A = np.array(
    [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
     [17, 8, 0.05, 10, 0.1, 14]]
)  # fmt: skip
_H_P = 1e-4 * np.array(
    [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
)  # fmt: skip
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    return float(-_H_ALPHA @ np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1)))


def ackley(x: np.ndarray) -> float:
    d = len(x)
    return float(
        -20 * np.exp(-0.2 * np.sqrt(np.sum(x**2) / d))
        - np.exp(np.sum(np.cos(2 * np.pi * x)) / d)
        + 20
        + math.e
    )


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def styblinski_tang(x: np.ndarray) -> float:
    return float(0.5 * np.sum(x**4 - 16 * x**2 + 5 * x))


_ST_MIN = -39.16616570377142  # per dimension, at x = -2.903534


def levy(x: np.ndarray) -> float:
    w = 1 + (x - 1) / 4
    return float(
        np.sin(np.pi * w[0]) ** 2
        + np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:-1] + 1) ** 2))
        + (w[-1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[-1]) ** 2)
    )


# -- mixed, conditional, constrained, multi-objective -------------------------------------------
_MIXED_OFFSET = {"a": 0.0, "b": 3.0, "c": 6.0, "d": 10.0}


def _mixed(p: Params) -> float:
    x = np.array([p["x0"], p["x1"], p["n0"], p["n1"]], dtype=float)
    return styblinski_tang(x) + _MIXED_OFFSET[p["cat"]]


def _conditional(p: Params) -> float:
    model = p["model"]
    if model == "linear":  # best 1.0
        return 1.0 + (math.log10(p["alpha"]) + 3) ** 2
    if model == "tree":  # best 0.0 at depth 7, min_leaf 0.3
        return (
            (p["depth"] - 7) ** 2 / 10
            + 10 * (p["min_leaf"] - 0.3) ** 2
            + (0.0 if p["criterion"] == "gini" else 0.5)
        )
    # "net": best 0.5
    return 0.5 + (math.log10(p["lr"]) + 2) ** 2 + (p["units"] - 64) ** 2 / 2000


def _gramacy_constraints(p: Params) -> dict[str, float]:
    x1, x2 = p["x0"], p["x1"]
    return {
        "c1": 1.5 - x1 - 2 * x2 - 0.5 * math.sin(2 * math.pi * (x1**2 - 2 * x2)),
        "c2": x1**2 + x2**2 - 1.5,
    }


def _branin_currin(p: Params) -> dict[str, float]:
    x1, x2 = p["x0"], p["x1"]
    f1 = branin(15 * x1 - 5, 15 * x2)
    x2c = max(x2, 1e-10)
    f2 = (
        (1 - math.exp(-1 / (2 * x2c)))
        * (2300 * x1**3 + 1900 * x1**2 + 2092 * x1 + 60)
        / (100 * x1**3 + 500 * x1**2 + 4 * x1 + 20)
    )
    return {"f1": f1, "f2": f2}


def all_problems() -> dict[str, BenchProblem]:
    probs = [
        BenchProblem(
            "branin",
            SearchSpace({"x0": Float(-5, 10), "x1": Float(0, 15)}),
            30,
            lambda p: branin(p["x0"], p["x1"]),
            optimum=0.39788735772973816,
        ),
        BenchProblem(
            "hartmann6", _box(6, 0, 1), 60, lambda p: hartmann6(_vec(p, 6)), optimum=-3.32236801
        ),
        BenchProblem("ackley5", _box(5, -32.768, 32.768), 60, lambda p: ackley(_vec(p, 5))),
        BenchProblem("rosenbrock4", _box(4, -5, 10), 60, lambda p: rosenbrock(_vec(p, 4))),
        BenchProblem(
            "styblinski_tang8",
            _box(8, -5, 5),
            80,
            lambda p: styblinski_tang(_vec(p, 8)),
            optimum=8 * _ST_MIN,
        ),
        BenchProblem("levy10", _box(10, -10, 10), 80, lambda p: levy(_vec(p, 10))),
        BenchProblem(
            "mixed",
            SearchSpace(
                {
                    "x0": Float(-5, 5),
                    "x1": Float(-5, 5),
                    "n0": Int(-5, 5),
                    "n1": Int(-5, 5),
                    "cat": Categorical(["d", "c", "b", "a"]),
                }
            ),
            50,
            _mixed,
            optimum=2 * _ST_MIN + 2 * styblinski_tang(np.array([-3.0])),
            kind="mixed",
        ),
        BenchProblem(
            "hartmann6_noisy",
            _box(6, 0, 1),
            60,
            lambda p: hartmann6(_vec(p, 6)),
            optimum=-3.32236801,
            noise_sd=0.1,
            kind="noisy",
        ),
        BenchProblem(
            "conditional",
            SearchSpace(
                {
                    "model": Categorical(["linear", "net", "tree"]),
                    "alpha": Float(1e-6, 1.0, log=True, condition={"model": ["linear"]}),
                    "lr": Float(1e-5, 1.0, log=True, condition={"model": ["net"]}),
                    "units": Int(8, 512, log=True, condition={"model": ["net"]}),
                    "depth": Int(1, 20, condition={"model": ["tree"]}),
                    "min_leaf": Float(0.0, 1.0, condition={"model": ["tree"]}),
                    "criterion": Categorical(["entropy", "gini"], condition={"model": ["tree"]}),
                }
            ),
            50,
            _conditional,
            kind="conditional",
        ),
        BenchProblem(
            "gramacy_constrained",
            _box(2, 0, 1),
            40,
            lambda p: p["x0"] + p["x1"],
            optimum=0.5997880520100523,  # at (0.19512, 0.40467), on the c1 boundary
            constraints={
                "c1": Constraint(op="<=", bound=0.0),
                "c2": Constraint(op="<=", bound=0.0),
            },
            constraint_values=_gramacy_constraints,
            infeasible_regret=1.4,
            kind="constrained",
        ),
        BenchProblem(
            "branin_currin",
            _box(2, 0, 1),
            40,
            lambda p: 0.0,
            objectives=("f1", "f2"),
            multi=_branin_currin,
            ref_point=(18.0, 6.0),
            hv_max=59.36011874867746,
            kind="multi-objective",
        ),
    ]
    return {p.name: p for p in probs}


def hypervolume_2d(points: np.ndarray, ref: tuple[float, ...]) -> float:
    """Hypervolume (minimization) of 2-D points dominated by ``ref``."""
    P = points[np.all(points < np.asarray(ref), axis=1)]
    if len(P) == 0:
        return 0.0
    P = P[np.argsort(P[:, 0])]
    hv, best_y = 0.0, ref[1]
    for x, y in P:
        if y < best_y:
            hv += (ref[0] - x) * (best_y - y)
            best_y = y
    return hv
