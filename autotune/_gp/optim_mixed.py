"""Maximize an acquisition over a mixed, possibly conditional, unit-cube domain.

Multi-start alternating local search, in the spirit of Optuna's ``optim_mixed`` and BoTorch's
``optimize_acqf_mixed_alternating``:

1. Candidates: scrambled Sobol' points plus perturbations of the best observed points, all
   snapped to the grid (discrete coordinates) with inactive coordinates pinned.
2. Starts: the best candidates (a few, distinct) and the incumbents themselves.
3. Alternate until nothing changes: L-BFGS-B on the active continuous coordinates of all starts
   at once (one scipy call on the concatenated vector; the starts do not interact, so the summed
   objective has a block gradient), in coordinates scaled by the lengthscales so the problem is
   well conditioned; then, per discrete coordinate, the best of its neighbouring levels (all
   levels for categoricals and small grids). Discrete values are never relaxed and rounded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch
from scipy.stats import qmc

from autotune._gp.search_space import MAX_EXHAUSTIVE_LEVELS, EncodedSpace

Acqf = Callable[[torch.Tensor], torch.Tensor]

# Neighbouring grid steps tried for ordinal parameters with large grids.
_NEIGHBOUR_STEPS = np.array([-8, -4, -2, -1, 1, 2, 4, 8])
_EVAL_CHUNK = 2048


def evaluate(acqf: Acqf, X: np.ndarray) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(X), _EVAL_CHUNK):
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
    """L-BFGS-B on the continuous, active coordinates of every row of X0 (b, dim) jointly."""
    cont = enc.continuous_indices
    if len(cont) == 0:
        return X0
    b = len(X0)
    active = enc.active_mask(X0)[:, cont]  # (b, n_cont)
    scale = np.clip(lengthscales[cont], 1e-3, 1.0)  # z = x / scale
    z0 = (X0[:, cont] / scale).ravel()
    upper = np.broadcast_to(1.0 / scale, (b, len(cont))).ravel()
    lower = np.zeros_like(upper)
    # Inactive coordinates: fixed at their pinned value via equal bounds.
    fixed = ~active.ravel()
    lower = np.where(fixed, z0, lower)
    upper = np.where(fixed, z0, upper)
    base = torch.from_numpy(X0.copy())
    scale_t = torch.from_numpy(scale)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z.reshape(b, len(cont))).requires_grad_(True)
        x = base.clone()
        x[:, cont] = zt * scale_t
        vals = acqf(x)
        vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, -1e10))
        loss = -vals.sum()
        (grad,) = torch.autograd.grad(loss, zt)
        g = grad.numpy().ravel()
        return loss.item(), np.where(np.isfinite(g), g, 0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.optimize.minimize(
            fun,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lower, upper, strict=True)),
            options={"maxiter": maxiter, "gtol": 1e-6, "ftol": 1e-9 * b},
        )
    X = X0.copy()
    X[:, cont] = np.clip(res.x.reshape(b, len(cont)) * scale, 0.0, 1.0)
    return X


def _discrete_pass(
    acqf: Acqf, X: np.ndarray, vals: np.ndarray, enc: EncodedSpace
) -> tuple[np.ndarray, np.ndarray, bool]:
    """For each discrete coordinate in turn, move every row to its best neighbouring level."""
    changed = False
    for j in enc.discrete_indices:
        grid = enc.grids[j]
        assert grid is not None
        if len(grid) < 2:
            continue
        active = enc.active_mask(X)[:, j]
        for r in np.flatnonzero(active):
            if len(grid) <= MAX_EXHAUSTIVE_LEVELS or enc.is_categorical[j]:
                levels = grid
            else:
                k = int(np.argmin(np.abs(grid - X[r, j])))
                idx = np.unique(np.clip(k + _NEIGHBOUR_STEPS, 0, len(grid) - 1))
                levels = grid[idx]
            levels = levels[levels != X[r, j]]
            if len(levels) == 0:
                continue
            cand = np.repeat(X[r : r + 1], len(levels), axis=0)
            cand[:, j] = levels
            cand = enc.canonicalize(cand)
            cv = evaluate(acqf, cand)
            i = int(np.argmax(cv))
            if cv[i] > vals[r] + 1e-12 * max(1.0, abs(vals[r])):
                X[r], vals[r] = cand[i], cv[i]
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
    n_starts: int = 4,
    n_perturb: int = 32,
    maxiter: int = 100,
    max_rounds: int = 4,
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
    order = np.argsort(-vals, kind="stable")
    starts = [X[order[0]]]
    for i in order[1:]:
        if len(starts) >= n_starts:
            break
        if min(np.abs(X[i] - s).max() for s in starts) > 1e-6:
            starts.append(X[i])
    S = (
        np.vstack([np.vstack(starts), enc.canonicalize(incumbents)])
        if len(incumbents)
        else (np.vstack(starts))
    )
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
