"""The GP designer: Bayesian optimization on the unit-cube encoding (the only bridge from the
designer interface to the numerics in :mod:`autotune._gp`).

One call of ``suggest``:

1. Initial design. Until ``n_initial`` configurations have been handed out (finished plus
   running), or while no trial has completed, the study's scrambled Sobol' sequence continues
   (``SobolDesigner``). ``n_initial`` defaults to ``max(4, min(dim + 1, 10))``: few initial
   points leave more of a small budget to the model.
2. Models. Objectives are turned into maximization, standardized and Gaussianized by a
   Yeo-Johnson power transform (monotone, fitted by maximum likelihood; HEBO's output warping)
   and, for one objective, shifted so that the GP's prior mean is the worst value seen
   (``_pessimistic``: unexplored corners no longer look promising); one GP per objective, one per outcome constraint and, when some trials failed, one "failure"
   GP on the indicator of failure, treated as a constraint (``failed <= 0.5``) so the
   acquisition steers away from regions that keep failing; failed points also enter the
   objective GPs at the worst observed value. Hyperparameters start from the previous fit of the
   same problem (a per-instance cache, only a warm start: without it the fit starts from the
   prior's mode, so results never depend on the cache for correctness).
3. Acquisition. One objective: LogEI over the noisy incumbent (best posterior mean among feasible
   observed points) times the probability of feasibility; several: LogEHVI over the
   posterior-mean Pareto front (``mo_acquisition="qlognehvi"``: BoTorch's qLogNEHVI), reference
   point: the worst feasible observed value of each objective minus 10 % of its range. Until a
   feasible point is known, the probability of feasibility alone (feasibility-seeking phase).
4. Batches and running trials: sequential greedy. Running trials and the points already chosen
   in this call enter as fantasies (observed at their posterior mean; X_pending for qLogNEHVI),
   and a candidate equal to a finished, running or chosen configuration is never returned.

Cost, and the switch points that bound it as a study grows:

* every call: one warm-started L-BFGS-B fit per GP at Optuna's loose gradient tolerance; the
  acquisition is screened on min(512, 128 * dim) Sobol' points plus 32 perturbations of each of
  the 3 best observed points, then 3 + 2 local searches (batched L-BFGS on continuous coordinates with
  closed-form gradients, neighbour search on discrete ones, at most 3 alternations).
* more than ``MAX_FIT_POINTS`` (200) usable trials: each GP is fitted on a subset of 200: the
  best half (feasible first) plus a random half of the rest, drawn from the call's seed. The
  fit costs O(200^3) whatever the study's size, so a suggestion stays well under a second at
  1,000 trials (the benchmark times it); only encoding the history grows, linearly.
* dimension: the lengthscale prior scales with it (Hvarfner et al. 2024), which is what keeps a
  plain GP competitive up to a few dozen parameters; there is no other switch in dimension.
  Optuna's prior (every lengthscale near the unit cube's width) was tried in its place: over 5
  seeds it helped Levy 10-D (0.74 against 0.91) but lost on 8 of the 11 benchmark problems
  (``benchmarks/results/optimizers_optuna_prior.json``).
* several objectives: LogEHVI screens 256 points with 32 quasi-MC samples. It stays the default
  over BoTorch's qLogNEHVI (``mo_acquisition="qlognehvi"``, already with ``prune_baseline=True``,
  32 quasi-MC samples, 128 screened points and 2 local searches) for cost alone: at 30
  BraninCurrin trials, on one thread under the same load (1-minute load average about 9),
  a suggestion took 0.24 s with LogEHVI, 5.3 s with qLogNEHVI and 1.7 s with Optuna's
  GPSampler, so qLogNEHVI would break the engine's target of half GPSampler's time. Its
  quality was better (mean final log10 hypervolume regret 0.32 over 4 seeds against 0.43 for
  LogEHVI, GPSampler 0.56). Most of its cost is sampling the joint posterior of the pruned
  baseline at every acquisition call; BoTorch's cached root decomposition
  (``cache_root=True``) needs a GPyTorch model's low-rank posterior updates, which our NumPy
  GP does not provide.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, n_seen])`` where
``n_seen`` is the number of finished plus running trials.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from autotune.designers._base import Designer, Problem, register_designer
from autotune.designers.sobol import SobolDesigner
from autotune.models import Direction, Trial, TrialState
from autotune.space import Params

MAX_FIT_POINTS = 200
N_INCUMBENTS = 3
_MC_OPTIM = {"n_raw": 128, "n_perturb": 8, "n_starts": 2, "maxiter": 20}  # qLogNEHVI
_EHVI_OPTIM = {"n_raw": 256, "n_perturb": 16}  # LogEHVI: Monte Carlo, but cheap
# Problems whose warm-start hyperparameters a designer instance keeps.
_CACHE_SIZE = 64


def default_n_initial(dim: int) -> int:
    return max(4, min(dim + 1, 10))


_THREADPOOLS: Any = None


@contextmanager
def _limit_threads(n: int) -> Iterator[None]:
    """Run torch and BLAS on ``n`` threads while suggesting, then restore the caller's setting.

    The GP's matrices are small: many short calls, where thread start-up and the contention
    between torch's OpenMP pool and SciPy's OpenBLAS pool (SciPy >= 1.15's L-BFGS-B calls BLAS)
    cost more than they save; Optuna's GP limits threads for the same reason.
    """
    global _THREADPOOLS
    import torch

    if _THREADPOOLS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _THREADPOOLS = ThreadpoolController()
            blas = [i["num_threads"] for i in _THREADPOOLS.info() if i["user_api"] == "blas"]
            if all(t <= n for t in blas):  # already limited (OPENBLAS_NUM_THREADS=1): no-op
                _THREADPOOLS = False
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _THREADPOOLS = False
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        if _THREADPOOLS:
            with _THREADPOOLS.limit(limits=n, user_api="blas"):
                yield
        else:
            yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def _key(x: np.ndarray) -> tuple[float, ...]:
    return tuple(np.round(x, 9).tolist())


@register_designer("gp")
class GPDesigner(Designer):
    """Bayesian optimization with GPs and LogEI-family acquisitions (see the module docstring).

    Args:
        n_initial: size of the initial Sobol' design; default ``max(4, min(dim + 1, 10))``.
        max_fit_points: trials each GP is fitted on, at most (the large-study switch point).
        threads: torch threads used while suggesting.
        mo_acquisition: several objectives: ``"logehvi"`` (quasi-MC LogEHVI over the
            posterior-mean front, fast) or ``"qlognehvi"`` (BoTorch's qLogNEHVI, slower).
    """

    name = "gp"

    def __init__(
        self,
        *,
        n_initial: int | None = None,
        max_fit_points: int = MAX_FIT_POINTS,
        threads: int = 1,
        mo_acquisition: str = "logehvi",
    ) -> None:
        if mo_acquisition not in ("logehvi", "qlognehvi"):
            raise ValueError(
                f"mo_acquisition must be 'logehvi' or 'qlognehvi', got {mo_acquisition!r}"
            )
        self.mo_acquisition = mo_acquisition
        self.n_initial = n_initial
        self.max_fit_points = max_fit_points
        self.threads = threads
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._info: dict[str, Any] = {"designer": self.name, "phase": "not started"}

    def describe(self) -> dict[str, Any]:
        return dict(self._info)

    # -- the designer interface --------------------------------------------------------------
    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        if count <= 0:
            return []
        space = problem.space
        n_seen = len(completed) + len(pending)
        n_initial = self.n_initial or default_n_initial(space.dim)
        n_ok = sum(1 for t in completed if _usable(t, problem))
        if n_seen < n_initial or n_ok == 0:
            why = (
                f"{n_seen} of {n_initial} initial points handed out"
                if n_seen < n_initial
                else "no completed trial to fit a model on yet"
            )
            self._info = {
                "designer": self.name,
                "phase": "initial design (sobol)",
                "reason": why,
            }
            return SobolDesigner().suggest(
                problem, completed=completed, pending=pending, count=count, seed=seed
            )
        with _limit_threads(self.threads):
            return self._suggest_bo(problem, completed, pending, count, seed)

    # -- Bayesian optimization ------------------------------------------------------------------
    def _suggest_bo(
        self,
        problem: Problem,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        import torch

        from autotune._gp.acqf import ConstraintModel, LogEHVI, LogEI, LogPoF, make_qlognehvi
        from autotune._gp.gp import fit_gp
        from autotune._gp.optim_mixed import evaluate, optimize_acqf_mixed
        from autotune._gp.search_space import encode_space

        space = problem.space
        rng = np.random.default_rng([seed, len(completed) + len(pending)])
        data = _Data.build(problem, completed, pending)
        cache = self._cache_for(problem)
        enc = cache.get("encoded space")
        if enc is None:
            enc = cache["encoded space"] = encode_space(space)

        ok_idx = np.arange(len(data.X_ok))
        subset = len(ok_idx) > self.max_fit_points
        if subset:
            ok_idx = data.subset(self.max_fit_points, rng)
        X = data.X_ok[ok_idx]  # (n, dim)
        Y = data.Y[ok_idx]  # (n, m), maximized
        C = data.C[ok_idx]  # (n, c), feasible when <= 0
        feasible = np.all(C <= 0.0, axis=1)

        def fit(name: str, X_: np.ndarray, y_: np.ndarray) -> Any:
            gp = fit_gp(X_, y_, enc.is_categorical, init=cache.get(name))
            cache[name] = gp.params
            return gp

        X_fail = data.X_fail
        if len(X_fail) > self.max_fit_points:
            X_fail = X_fail[rng.choice(len(X_fail), self.max_fit_points, replace=False)]
        # Failed trials enter the objective models at the worst observed value (as SMAC
        # imputes crashes), so the model itself is pessimistic around them.
        X_obj = np.vstack([X, X_fail])
        Y_obj = np.vstack([Y, np.repeat(Y.min(0, keepdims=True), len(X_fail), axis=0)])
        Z_obj = np.column_stack([_warp(Y_obj[:, i]) for i in range(Y.shape[1])])
        if Z_obj.shape[1] == 1:
            Z_obj = _pessimistic(Z_obj)
        objectives = [fit(f"objective:{i}", X_obj, Z_obj[:, i]) for i in range(Y.shape[1])]
        constraints: list[ConstraintModel] = []
        for j in range(C.shape[1]):
            z, mu, sd = _standardize(C[:, j])
            constraints.append(ConstraintModel(fit(f"constraint:{j}", X, z), (0.0 - mu) / sd))
        if len(X_fail):
            Xf = X_obj
            z, mu, sd = _standardize(np.r_[np.zeros(len(X)), np.ones(len(X_fail))])
            constraints.append(ConstraintModel(fit("failure", Xf, z), (0.5 - mu) / sd))

        multi = Y.shape[1] > 1
        has_feasible = bool(feasible.any())
        if not has_feasible and (C.shape[1] > 0):
            phase, acq_name = "feasibility search", "log probability of feasibility"
        else:
            phase = "bayesian optimization"
            acq_name = (
                "LogEI"
                if not multi
                else ("qLogNEHVI" if self.mo_acquisition == "qlognehvi" else "LogEHVI")
            )
        self._info = {
            "designer": self.name,
            "phase": phase,
            "acquisition": acq_name,
            "n_fit": int(len(X)),
            "reason": (
                f"fitted on a subset of {len(X)} of {len(data.X_ok)} trials"
                if subset
                else f"fitted on {len(X)} trials"
            )
            + (
                f", {len(data.X_fail)} failed ones modelled as a constraint"
                if len(data.X_fail)
                else ""
            ),
        }

        seen = {_key(x) for x in data.X_seen}
        if multi:
            ref_point = _ref_point(Z_obj[: len(X)], feasible)
            front_idx = np.flatnonzero(feasible)[_pareto(Y[feasible])]
        n_raw = min(512, 128 * space.dim)
        lengthscales = (objectives[0] if objectives else constraints[0].gp).params.lengthscales
        X_pend = data.X_pending
        chosen: list[np.ndarray] = []
        for _ in range(count):
            X_fant = np.vstack([X_pend, *chosen]) if (len(X_pend) or chosen) else X_pend
            if phase == "feasibility search":
                cons = [ConstraintModel(c.gp.with_fantasies(X_fant), c.bound) for c in constraints]
                acqf = LogPoF(cons)
                inc = X[np.argsort(-evaluate(acqf, X), kind="stable")[:N_INCUMBENTS]]
            elif multi and self.mo_acquisition == "qlognehvi":
                acqf = make_qlognehvi(
                    objectives,
                    constraints,
                    X_baseline=torch.from_numpy(X),
                    ref_point=torch.from_numpy(ref_point),
                    X_pending=torch.from_numpy(X_fant) if len(X_fant) else None,
                    seed=int(rng.integers(2**31)),
                    n_mc=32,
                )
                inc = X[rng.permutation(front_idx)[:N_INCUMBENTS]]
            elif multi:
                gps = [g.with_fantasies(X_fant) for g in objectives]
                cons = [ConstraintModel(c.gp.with_fantasies(X_fant), c.bound) for c in constraints]
                # The front: posterior means at the feasible observed points and, as believed
                # outcomes, at the pending and already chosen points.
                X_front = np.vstack([X[feasible], X_fant]) if len(X_fant) else X[feasible]
                with torch.no_grad():
                    xf = torch.from_numpy(X_front)
                    M = np.column_stack([g.posterior(xf)[0].numpy() for g in gps])
                acqf = LogEHVI(gps, M, ref_point, cons, n_mc=32, seed=int(rng.integers(2**31)))
                inc = X[rng.permutation(front_idx)[:N_INCUMBENTS]]
            else:
                gp = objectives[0].with_fantasies(X_fant)
                y0 = Y[:, 0]
                with torch.no_grad():
                    mean, _ = objectives[0].posterior(torch.from_numpy(X))
                mean = mean.numpy()
                pool = feasible if has_feasible else np.ones(len(X), dtype=bool)
                best = float(np.max(mean[pool]))
                if len(X_fant):
                    # Pending and chosen points belong to the baseline, as in qLogNEI: their
                    # believed outcomes raise the incumbent, else a point next to a believed
                    # optimum keeps its improvement and a batch piles up at one spot.
                    with torch.no_grad():
                        xf = torch.from_numpy(X_fant)
                        fm = objectives[0].posterior(xf)[0].numpy()
                        ok = np.ones(len(X_fant), dtype=bool)
                        for c in constraints:
                            ok &= c.gp.posterior(xf)[0].numpy() <= c.bound
                    if ok.any():
                        best = max(best, float(np.max(fm[ok])))
                acqf = LogEI(gp, best, constraints)
                order = np.flatnonzero(pool)[np.argsort(-y0[pool], kind="stable")]
                inc = X[order[:N_INCUMBENTS]]
            # qLogNEHVI is a Monte Carlo acquisition: about 50 times the cost of analytic LogEI
            # per point, so it gets a smaller candidate set and shorter local searches.
            mc = multi and phase != "feasibility search" and self.mo_acquisition == "qlognehvi"
            budget = _MC_OPTIM if mc else (_EHVI_OPTIM if multi else {"n_raw": n_raw})
            cands, _ = optimize_acqf_mixed(
                acqf, enc, lengthscales=lengthscales, incumbents=inc, rng=rng, **budget
            )
            x = next((c for c in cands if _key(c) not in seen), None)
            if x is None:  # every candidate is taken: a fresh random point of the space
                x = _fresh_point(enc, seen, rng)
            seen.add(_key(x))
            chosen.append(x)
        return [space.validate_params(space.decode(x)) for x in chosen]

    def _cache_for(self, problem: Problem) -> dict[str, Any]:
        key = json.dumps(
            {
                "space": problem.space.to_json(),
                "objectives": {k: str(v) for k, v in problem.objectives.items()},
                "constraints": {k: [c.op, c.bound] for k, c in problem.constraints.items()},
            },
            sort_keys=True,
            default=str,
        )
        entry = self._cache.pop(key, None) or {}
        self._cache[key] = entry
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry


def _usable(t: Trial, problem: Problem) -> bool:
    if t.state != TrialState.COMPLETED or t.values is None:
        return False
    names = [*problem.objectives, *problem.constraints]
    return all(n in t.values and np.isfinite(t.values[n]) for n in names)


class _Data:
    """The history as arrays: usable trials, failed trials, every configuration seen."""

    def __init__(self) -> None:
        self.X_ok = np.zeros((0, 0))
        self.Y = np.zeros((0, 0))
        self.C = np.zeros((0, 0))
        self.X_fail = np.zeros((0, 0))
        self.X_pending = np.zeros((0, 0))
        self.X_seen = np.zeros((0, 0))

    @classmethod
    def build(
        cls, problem: Problem, completed: Sequence[Trial], pending: Sequence[Params]
    ) -> _Data:
        space = problem.space
        d = cls()
        ok, ys, cs, fail, seen = [], [], [], [], []
        for t in completed:
            x = space.encode(t.params)
            seen.append(x)
            if _usable(t, problem):
                assert t.values is not None
                ok.append(x)
                ys.append(
                    [
                        t.values[n] * (1.0 if dirn == Direction.MAXIMIZE else -1.0)
                        for n, dirn in problem.objectives.items()
                    ]
                )
                # Constraints as "g <= 0": value - bound for "<=", bound - value for ">=".
                cs.append(
                    [
                        (t.values[n] - c.bound) if c.op == "<=" else (c.bound - t.values[n])
                        for n, c in problem.constraints.items()
                    ]
                )
            elif t.state == TrialState.FAILED or t.state == TrialState.COMPLETED:
                fail.append(x)  # failed, or completed without a usable value
        dim, m, c = space.dim, len(problem.objectives), len(problem.constraints)
        d.X_ok = np.array(ok, dtype=float).reshape(len(ok), dim)
        d.Y = np.array(ys, dtype=float).reshape(len(ok), m)
        d.C = np.array(cs, dtype=float).reshape(len(ok), c)
        d.X_fail = np.array(fail, dtype=float).reshape(len(fail), dim)
        d.X_pending = space.encode_many(pending).reshape(-1, dim)
        d.X_seen = np.vstack([np.array(seen, dtype=float).reshape(len(seen), dim), d.X_pending])
        return d

    def subset(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of ``n`` trials to fit on: the best half (feasible first), then random."""
        feasible = np.all(self.C <= 0.0, axis=1)
        if self.Y.shape[1] == 1:
            score = self.Y[:, 0]
        else:  # Pareto points first, then by the sum of standardized objectives
            score = ((self.Y - self.Y.mean(0)) / (self.Y.std(0) + 1e-12)).sum(1)
            score = score + np.where(_pareto_mask(self.Y), 1e6, 0.0)
        score = np.where(feasible, score, score - 1e12)
        order = np.argsort(-score, kind="stable")
        top = order[: n // 2]
        rest = rng.choice(order[n // 2 :], n - len(top), replace=False)
        return np.sort(np.concatenate([top, rest]))


def _standardize(v: np.ndarray) -> tuple[np.ndarray, float, float]:
    mu = float(np.mean(v)) if len(v) else 0.0
    sd = float(np.std(v)) if len(v) > 1 else 0.0
    if not np.isfinite(sd) or sd < 1e-12:
        sd = 1.0
    return (v - mu) / sd, mu, sd


def _yeo_johnson(z: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Yeo-Johnson transform of z (n,) for each lambda of ``lam`` (L,): (L, n)."""
    lam = lam[:, None]
    pos = z >= 0
    zp, zn = np.log1p(np.where(pos, z, 0.0)), np.log1p(np.where(pos, 0.0, -z))
    with np.errstate(all="ignore"):
        a = np.where(np.abs(lam) < 1e-8, zp, np.expm1(lam * zp) / np.where(lam == 0, 1, lam))
        b2 = 2.0 - lam
        b = np.where(np.abs(b2) < 1e-8, zn, np.expm1(b2 * zn) / np.where(b2 == 0, 1, b2))
    return np.where(pos, a, -b)


def _warp(v: np.ndarray) -> np.ndarray:
    """Standardize, then Gaussianize with a Yeo-Johnson power transform whose lambda maximizes
    the normal likelihood (HEBO, Cowen-Rivers et al. 2022): heavy tails (Rosenbrock's huge
    values, Hartmann's narrow peak) are compressed so a stationary GP fits them. The transform
    is monotone, so optima and Pareto fronts are unchanged."""
    z = _standardize(v)[0]
    if len(v) < 3 or np.ptp(z) < 1e-12:
        return z
    # Profile likelihood on a grid, then a finer grid around its best: no optimizer calls.
    lam = np.linspace(-2.0, 4.0, 61)
    jac = np.sum(np.sign(z) * np.log1p(np.abs(z)))
    for width in (0.1, 0.01):
        with np.errstate(all="ignore"):
            psi = _yeo_johnson(z, lam)
            ll = -0.5 * len(z) * np.log(np.var(psi, axis=1)) + (lam - 1.0) * jac
        ll = np.where(np.isfinite(ll), ll, -np.inf)
        best = lam[int(np.argmax(ll))]
        lam = best + np.linspace(-width, width, 21)
    w = _yeo_johnson(z, np.array([best]))[0]
    if not np.all(np.isfinite(w)) or np.ptp(w) < 1e-12:
        return z
    return _standardize(w)[0]


def _pessimistic(Z: np.ndarray) -> np.ndarray:
    """Shift each column so that its worst value is 0, the zero-mean GP's prior mean.

    Away from the data the model then expects the worst value seen, not the average: EI
    there comes from the variance alone, and unexplored corners of the cube stop looking
    promising. De Ath, Fieldsend & Everson, "What do you mean? The role of the mean function
    in Bayesian optimisation" (GECCO 2020) found this prior mean the most robust choice,
    above all in higher dimension, where a constant mean at the data's average draws BO to
    the boundary. Measured here over 10 seeds it cut the mean final log10 regret on every
    single-objective benchmark problem but the constrained and conditional ones (within their
    standard errors there); on the two-objective problem it was worse, so it applies to one
    objective only.
    """
    return Z - Z.min(axis=0, keepdims=True)


def _pareto_mask(Y: np.ndarray) -> np.ndarray:
    """(n,) bool: rows of Y (maximized) that no other row dominates."""
    n = len(Y)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(Y[i] <= Y, axis=1) & np.any(Y[i] < Y, axis=1)
        mask[i] = not dominated.any()
    return mask


def _pareto(Y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(_pareto_mask(Y))


def _ref_point(Z: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """Reference point (standardized Z): worst feasible value minus 10 % of the range."""
    Zf = Z[feasible] if feasible.any() else Z
    lo, hi = Zf.min(0), Zf.max(0)
    return lo - 0.1 * np.maximum(hi - lo, 1e-6)


def _fresh_point(enc: Any, seen: set[tuple[float, ...]], rng: np.random.Generator) -> np.ndarray:
    x = enc.canonicalize(rng.random((1, enc.dim)))[0]
    for _ in range(1000):
        if _key(x) not in seen:
            break
        x = enc.canonicalize(rng.random((1, enc.dim)))[0]
    return x
