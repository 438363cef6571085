"""Batched, box-constrained L-BFGS: independent minimizations that share each function call.

The acquisition is evaluated on all starts at once (one tensor call), but every start keeps its
own curvature pairs, step length and stopping test. Summing the starts into one scipy problem
would couple them through a single line search, so one start in a steep region stalls the
others (Optuna solves the same problem with greenlets around scipy's L-BFGS-B).

Bounds are handled by projection: directions are zeroed on coordinates pinned at a bound and
pointing out, and trial points are clipped to the box (projected L-BFGS with an Armijo
backtracking line search). Rows whose lower and upper bounds coincide stay fixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FuncGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(x (k, n), row indices (k,)) -> values (k,), gradients (k, n); to minimize."""


def minimize(  # noqa: C901
    fg: FuncGrad,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    maxiter: int = 50,
    history: int = 4,
    gtol: float = 1e-3,
    ftol: float = 1e-6,
    max_backtracks: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize each row independently; return the points (b, n) and values (b,)."""
    b, n = x0.shape
    x = np.clip(x0, lower, upper)
    rows = np.arange(b)
    f, g = fg(x, rows)
    S = np.zeros((history, b, n))
    Y = np.zeros((history, b, n))
    rho = np.zeros((history, b))
    gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-12)  # first step: unit length
    active = np.ones(b, dtype=bool)
    for it in range(maxiter):
        pg = x - np.clip(x - g, lower, upper)
        active &= np.abs(pg).max(axis=1) > gtol
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        # Two-loop recursion, vectorized over the active rows (empty pairs have rho = 0).
        q = g[idx].copy()
        alphas = []
        for k in range(history):
            j = (it - 1 - k) % history
            a = rho[j, idx] * np.einsum("bn,bn->b", S[j, idx], q)
            q -= a[:, None] * Y[j, idx]
            alphas.append((j, a))
        r = gamma[idx, None] * q
        for j, a in reversed(alphas):
            beta = rho[j, idx] * np.einsum("bn,bn->b", Y[j, idx], r)
            r += S[j, idx] * (a - beta)[:, None]
        d = -r
        xi, gi = x[idx], g[idx]
        lo, hi = lower[idx], upper[idx]
        d[((xi <= lo) & (d < 0)) | ((xi >= hi) & (d > 0))] = 0.0
        slope = np.einsum("bn,bn->b", gi, d)
        bad = slope >= 0  # not a descent direction: steepest descent instead
        if bad.any():
            d[bad] = -gi[bad]
            d[bad & False] = 0.0
            d[((xi <= lo) & (d < 0)) | ((xi >= hi) & (d > 0))] = 0.0
        # Armijo backtracking, per row.
        t = np.ones(len(idx))
        x_new = np.clip(xi + d, lo, hi)
        f_new, g_new = fg(x_new, idx)
        for _ in range(max_backtracks):
            ok = f_new <= f[idx] + 1e-4 * np.einsum("bn,bn->b", gi, x_new - xi)
            ok |= ~np.isfinite(f[idx])
            if ok.all():
                break
            redo = np.flatnonzero(~ok)
            t[redo] *= 0.25
            x_new[redo] = np.clip(xi[redo] + t[redo, None] * d[redo], lo[redo], hi[redo])
            f_r, g_r = fg(x_new[redo], idx[redo])
            f_new[redo], g_new[redo] = f_r, g_r
        improved = f_new < f[idx]
        s = x_new - xi
        y = g_new - gi
        sy = np.einsum("bn,bn->b", s, y)
        j = it % history
        keep = improved & (sy > 1e-12)
        S[j, idx] = np.where(keep[:, None], s, 0.0)
        Y[j, idx] = np.where(keep[:, None], y, 0.0)
        rho[j, idx] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        yy = np.einsum("bn,bn->b", y, y)
        gamma[idx] = np.where(keep, sy / np.maximum(yy, 1e-300), gamma[idx])
        small = np.abs(f[idx] - f_new) <= ftol * (1.0 + np.abs(f[idx]))
        upd = idx[improved]
        x[upd], f[upd], g[upd] = x_new[improved], f_new[improved], g_new[improved]
        active[idx[~improved | small]] = False
    return x, f
