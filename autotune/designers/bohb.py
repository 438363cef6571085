"""BOHB-style model-based sampling from cheap evaluations (Falkner et al., 2018, "BOHB: Robust
and Efficient Hyperparameter Optimization at Scale").

A study with a stopper (ASHA, Hyperband) ends most trials after a few steps. Their intermediate
values are cheap evaluations of the same configurations at a smaller budget, and BOHB learns from
them: it models the largest budget (step) that enough trials reached, so the model is fitted on
as many points as possible at the most faithful fidelity available, pruned trials included.

The model is BOHB's TPE-like density ratio over the unit-cube encoding: the trials' values at
that budget are split into the best ``gamma`` fraction (good) and the rest (bad), a Gaussian
product kernel density is fitted to each, and the candidate with the largest ``l(x) / g(x)``
among ``n_candidates`` drawn around the good points (bandwidths widened by
``bandwidth_factor``) is proposed. A ``random_fraction`` of suggestions, and every suggestion
while fewer than ``dim + 2`` trials reached any one budget, is uniform random, which keeps
BOHB's convergence guarantee of random search.

Pure like every designer: the curves come with ``completed`` (finished trials with their
``intermediate`` values); the random stream is keyed by the seed and the history size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autotune.designers._base import Designer, Problem, register_designer
from autotune.models import Direction, Trial, TrialState
from autotune.space import Params

__all__ = ["BOHBDesigner"]

# Defaults of the paper's reference implementation (hpbandster's BOHB).
_GAMMA = 0.15  # top fraction that makes the "good" density
_RANDOM_FRACTION = 1 / 3
_N_CANDIDATES = 64
_BANDWIDTH_FACTOR = 3.0
_MIN_BANDWIDTH = 1e-3
_LEARNED = (TrialState.COMPLETED, TrialState.PRUNED)


def budget_observations(
    completed: Sequence[Trial], *, min_points: int
) -> tuple[int | None, list[tuple[Trial, float]]]:
    """The largest step that at least ``min_points`` trials reached, and each such trial's
    value there (its first reported value at or after that step, as ASHA reads a rung).

    Trials without intermediate values (a trainer that reports none) enter with their final
    value of the primary objective only when no trial has a curve, at budget ``None``.
    """
    curves = [t for t in completed if t.state in _LEARNED and t.intermediate]
    if not curves:
        final = [t for t in completed if t.state == TrialState.COMPLETED and t.values]
        return None, [(t, next(iter(t.values.values()))) for t in final]  # type: ignore[union-attr]
    last = sorted((max(m.step for m in t.intermediate) for t in curves), reverse=True)
    if len(last) < min_points:
        return None, []
    budget = last[min_points - 1]
    out = []
    for t in curves:
        later = [m for m in t.intermediate if m.step >= budget and math.isfinite(m.value)]
        if later:
            out.append((t, min(later, key=lambda m: m.step).value))
    return budget, out


def _bandwidths(points: np.ndarray) -> np.ndarray:
    """Scott's rule per dimension. points: (n, d) -> (d,)."""
    n, d = points.shape
    sd = points.std(axis=0) if n > 1 else np.full(d, 0.5)
    return np.maximum(sd * n ** (-1.0 / (d + 4)), _MIN_BANDWIDTH)


def _log_density(x: np.ndarray, points: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Log of a Gaussian product KDE. x: (m, d), points: (n, d), bw: (d,) -> (m,)."""
    z = (x[:, None, :] - points[None, :, :]) / bw  # (m, n, d)
    log_k = -0.5 * (z**2).sum(axis=2) - np.log(bw).sum()  # (m, n)
    top = log_k.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(log_k - top).mean(axis=1, keepdims=True)))[:, 0]


@register_designer("bohb")
class BOHBDesigner(Designer):
    """TPE-like density ratio on the largest budget with enough trials, pruned ones included.

    Args:
        gamma: fraction of the trials at that budget that form the good density.
        random_fraction: share of suggestions drawn uniformly at random.
        n_candidates: candidates drawn from the good density per suggestion.
        bandwidth_factor: widens the good density's bandwidths when drawing candidates.
        min_points: trials needed at one budget before the model is used; None -> dim + 2.
    """

    name = "bohb"

    def __init__(
        self,
        *,
        gamma: float = _GAMMA,
        random_fraction: float = _RANDOM_FRACTION,
        n_candidates: int = _N_CANDIDATES,
        bandwidth_factor: float = _BANDWIDTH_FACTOR,
        min_points: int | None = None,
    ) -> None:
        if not 0 < gamma < 1 or not 0 <= random_fraction <= 1 or n_candidates < 1:
            raise ValueError(
                f"bohb: need 0 < gamma < 1, 0 <= random_fraction <= 1, n_candidates >= 1; got "
                f"{gamma=}, {random_fraction=}, {n_candidates=}"
            )
        self.gamma = gamma
        self.random_fraction = random_fraction
        self.n_candidates = n_candidates
        self.bandwidth_factor = bandwidth_factor
        self.min_points = min_points
        self.last_budget: int | None = None  # the budget the last model was fitted on

    def describe(self) -> dict[str, object]:
        return {"designer": self.name, "budget": self.last_budget}

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        space = problem.space
        rng = np.random.default_rng([seed, len(completed) + len(pending)])
        min_points = self.min_points or space.dim + 2
        budget, obs = budget_observations(completed, min_points=min_points)
        self.last_budget = budget
        if len(obs) < min_points:
            return space.sample(rng, count)
        direction = next(iter(problem.objectives.values()), Direction.MINIMIZE)
        sign = 1.0 if direction == Direction.MINIMIZE else -1.0
        order = np.argsort([sign * v for _, v in obs], kind="stable")
        x = space.encode_many([obs[i][0].params for i in order])  # (n, d), best first
        n_good = max(1, math.ceil(self.gamma * len(obs)))
        good, bad = x[:n_good], x[n_good:]
        bw_good, bw_bad = _bandwidths(good), _bandwidths(bad)
        out: list[Params] = []
        for _ in range(count):
            if rng.random() < self.random_fraction:
                out.extend(space.sample(rng, 1))
                continue
            centers = good[rng.integers(len(good), size=self.n_candidates)]  # (c, d)
            cand = np.clip(
                centers + rng.normal(size=centers.shape) * bw_good * self.bandwidth_factor, 0, 1
            )
            score = _log_density(cand, good, bw_good) - _log_density(cand, bad, bw_bad)
            best = cand[int(np.argmax(score))]
            out.append(space.validate_params(space.decode(best)))
        return out
