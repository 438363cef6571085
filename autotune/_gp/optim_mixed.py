"""Maximize an acquisition over a mixed, possibly conditional, unit-cube domain.

Multi-start alternating local search, in the spirit of Optuna's ``optim_mixed`` and BoTorch's
``optimize_acqf_mixed_alternating``:

1. Candidates: scrambled Sobol' points plus perturbations of the best observed points, all
   snapped to the grid (discrete coordinates) with inactive coordinates pinned.
2. Starts: the best candidates (a few, distinct) and the incumbents themselves.
3. Alternate until nothing changes: L-BFGS-B on the active continuous coordinates of all starts
   at once (``batched_lbfgs``: one acquisition call per iteration, but each start with its own
   line search and stopping test), in coordinates scaled by the lengthscales so the problem is
   well conditioned; then, per discrete coordinate, the best of its neighbouring levels (all
   levels for categoricals and small grids). Discrete values are never relaxed and rounded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import qmc

from autotune._gp import batched_lbfgs
from autotune._gp.search_space import MAX_EXHAUSTIVE_LEVELS, EncodedSpace

Acqf = Callable[[torch.Tensor], torch.Tensor]

# Neighbouring grid steps tried for ordinal parameters with large grids.
_NEIGHBOUR_STEPS = np.array([-8, -4, -2, -1, 1, 2, 4, 8])
_EVAL_CHUNK = 2048


def evaluate(acqf: Acqf, X: np.ndarray) -> np.ndarray:
    out = []
    fast = getattr(acqf, "value_and_grad", None)
    with torch.no_grad():
        for i in range(0, len(X), _EVAL_CHUNK):
            if fast is not None:
                out.append(fast(X[i : i + _EVAL_CHUNK])[0])
            else:
                out.append(acqf(torch.from_numpy(X[i : i + _EVAL_CHUNK])).numpy())
    vals = np.concatenate(out) if out else np.zeros(0)
    return np.where(np.isfinite(vals), vals, -np.inf)


def _lbfgs(
    acqf: Acqf,
    X0: np.ndarray,
    enc: EncodedSpace,
    lengthscales: np.ndarray,
    maxiter: int,
) -> np.ndarray:
    """Batched L-BFGS on the continuous, active coordinates of every row of X0 (b, dim)."""
    cont = enc.continuous_indices
    if len(cont) == 0:
        return X0
    b = len(X0)
    active = enc.active_mask(X0)[:, cont]  # (b, n_cont)
    scale = np.clip(lengthscales[cont], 1e-3, 1.0)  # z = x / scale: a well-conditioned problem
    z0 = X0[:, cont] / scale
    upper = np.broadcast_to(1.0 / scale, (b, len(cont))).copy()
    lower = np.zeros_like(upper)
    # Inactive coordinates stay at their pinned value: equal bounds.
    lower[~active] = z0[~active]
    upper[~active] = z0[~active]
    base = torch.from_numpy(X0.copy())
    scale_t = torch.from_numpy(scale)
    fast = getattr(acqf, "value_and_grad", None)

    def fg_fast(z: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = X0[rows].copy()
        x[:, cont] = z * scale
        vals, grad = fast(x, cont)
        ok = np.isfinite(vals)
        g = np.where(ok[:, None] & np.isfinite(grad), grad * scale, 0.0)
        return -np.where(ok, vals, -1e10), -g

    def fg(z: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zt = torch.from_numpy(z).requires_grad_(True)
        x = base[rows].clone()
        x[:, cont] = zt * scale_t
        vals = acqf(x)
        vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, -1e10))
        (grad,) = torch.autograd.grad(-vals.sum(), zt)
        g = grad.numpy()
        return -vals.detach().numpy(), np.where(np.isfinite(g), g, 0.0)

    z, _ = batched_lbfgs.minimize(fg_fast if fast else fg, z0, lower, upper, maxiter=maxiter)
    X = X0.copy()
    X[:, cont] = np.clip(z * scale, 0.0, 1.0)
    return X


def _discrete_pass(
    acqf: Acqf, X: np.ndarray, vals: np.ndarray, enc: EncodedSpace
) -> tuple[np.ndarray, np.ndarray, bool]:
    """For each discrete coordinate in turn, move every row to its best neighbouring level.

    The candidates of all rows are evaluated in one call per coordinate.
    """
    changed = False
    for j in enc.discrete_indices:
        grid = enc.grids[j]
        assert grid is not None
        if len(grid) < 2:
            continue
        rows = np.flatnonzero(enc.active_mask(X)[:, j])
        if len(rows) == 0:
            continue
        if len(grid) <= MAX_EXHAUSTIVE_LEVELS or enc.is_categorical[j]:
            levels = np.broadcast_to(grid, (len(rows), len(grid)))
        else:
            k = np.abs(grid[None, :] - X[rows, j, None]).argmin(1)
            levels = grid[np.clip(k[:, None] + _NEIGHBOUR_STEPS, 0, len(grid) - 1)]
        n_lev = levels.shape[1]
        cand = np.repeat(X[rows], n_lev, axis=0)  # (rows * levels, dim)
        cand[:, j] = levels.ravel()
        cand = enc.canonicalize(cand)
        cv = evaluate(acqf, cand).reshape(len(rows), n_lev)
        best = cv.argmax(1)
        best_v = cv[np.arange(len(rows)), best]
        better = best_v > vals[rows] + 1e-12 * np.maximum(1.0, np.abs(vals[rows]))
        if better.any():
            r = rows[better]
            X[r] = cand.reshape(len(rows), n_lev, -1)[np.flatnonzero(better), best[better]]
            vals[r] = best_v[better]
            changed = True
    return X, vals, changed


def optimize_acqf_mixed(
    acqf: Acqf,
    enc: EncodedSpace,
    *,
    lengthscales: np.ndarray,
    incumbents: np.ndarray,
    rng: np.random.Generator,
    n_raw: int = 512,
    n_starts: int = 3,
    n_perturb: int = 32,
    maxiter: int = 20,
    max_rounds: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Return candidate points (m, dim), best first, and their acquisition values (m,).

    Args:
        acqf: maps (b, dim) tensors to (b,) values to maximize.
        enc: the encoded space.
        lengthscales: (dim,) the GP's lengthscales, to scale steps and perturbations.
        incumbents: (k, dim) the best observed points, as starts and perturbation centres.
        rng: the source of randomness (Sobol' scrambling, perturbations).
        n_raw: number of Sobol' candidates.
        n_starts: number of local searches started from candidates (besides incumbents).
        n_perturb: perturbations per incumbent.
        maxiter: L-BFGS-B iterations per round.
        max_rounds: continuous/discrete alternations.
    """
    dim = enc.dim
    sobol = qmc.Sobol(d=dim, scramble=True, seed=rng.integers(2**32))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*balance properties.*")
        raw = [sobol.random(n_raw)]
    if len(incumbents):
        centres = np.repeat(incumbents, n_perturb, axis=0)
        sd = np.clip(0.2 * lengthscales, 1e-3, 0.2)
        pert = centres + rng.normal(size=centres.shape) * sd
        # Discrete coordinates: jump to a random level with probability about 1/dim.
        jump = rng.random(centres.shape) < 1.0 / max(dim, 2)
        pert = np.where(jump & enc.is_discrete, rng.random(centres.shape), pert)
        raw.append(pert)
    X = enc.canonicalize(np.vstack(raw))
    vals = evaluate(acqf, X)
    # Starts: the best candidate overall, then Sobol' points drawn by roulette on the
    # acquisition (Optuna's rule: probability ~ exp(value - max), i.e. proportional to EI), so
    # that other basins than the incumbent's get a local search, then the incumbents.
    best = int(np.argmax(vals))
    sob_vals = vals[:n_raw]
    finite = np.isfinite(sob_vals)
    starts = [best]
    if finite.any() and n_starts > 1:
        w = np.where(finite, np.exp(sob_vals - sob_vals[finite].max()), 0.0)
        if best < n_raw:
            w[best] = 0.0
        k = min(n_starts - 1, int(np.count_nonzero(w > 0)))
        if k > 0:
            starts += rng.choice(n_raw, size=k, replace=False, p=w / w.sum()).tolist()
    S = X[starts]
    if len(incumbents):  # the best two observed points start local searches too
        S = np.vstack([S, enc.canonicalize(incumbents[:2])])
    S_vals = evaluate(acqf, S)
    for _ in range(max_rounds):
        S_new = enc.canonicalize(_lbfgs(acqf, S, enc, lengthscales, maxiter))
        new_vals = evaluate(acqf, S_new)
        better = new_vals > S_vals
        S[better], S_vals[better] = S_new[better], new_vals[better]
        if not enc.is_discrete.any():
            break
        S, S_vals, changed = _discrete_pass(acqf, S, S_vals, enc)
        if not changed:
            break
    allX = np.vstack([S, X])
    allv = np.concatenate([S_vals, vals])
    order = np.argsort(-allv, kind="stable")
    return allX[order], allv[order]
