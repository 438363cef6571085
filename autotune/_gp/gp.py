"""An exact Gaussian process on the unit-cube encoding, fitted by MAP with L-BFGS.

Notation (as in Optuna's ``_gp/gp.py``): ``X`` (n, dim) training inputs, ``y`` (n,) standardized
targets (to be maximized), ``x`` (..., dim) query points.

Kernel: Matern 5/2 with one lengthscale per coordinate (ARD) times an output scale. Categorical
coordinates contribute the Hamming distance (0 when equal, 1 otherwise) instead of the squared
difference, which is the categorical kernel of Optuna's GP and of CoCaBO-style mixed kernels.

Priors (MAP, on the log of each hyperparameter):
  * lengthscales: LogNormal(sqrt(2) + log(dim) / 2, sqrt(3)), the dimension-scaled prior of
    Hvarfner, Hellsten & Nardi, "Vanilla Bayesian Optimization Performs Great in High
    Dimensions" (ICML 2024), BoTorch's default for ``SingleTaskGP``;
  * output scale: LogNormal(0, 1) around the unit variance of standardized targets;
  * noise variance: Gamma(1.1, 30) (Optuna's), which allows near-interpolation of deterministic
    objectives, above a floor of ``MIN_NOISE`` that keeps the Cholesky factor well conditioned.

The hyperparameters are fitted by L-BFGS-B on the exact log marginal likelihood plus the log
prior, starting from the previous fit when the caller has one (warm start), else from the
prior's mode; a failed warm start falls back to the prior's mode.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

MIN_NOISE = 1e-6
# Lengthscales are kept inside this range (unit-cube coordinates): below it the kernel matrix of
# a few hundred points is numerically singular, above it a coordinate is ignored anyway.
LOG_LENGTHSCALE_BOUNDS = (math.log(5e-3), math.log(1e3))
LOG_SCALE_BOUNDS = (math.log(1e-3), math.log(1e2))
LOG_NOISE_BOUNDS = (math.log(1e-9), math.log(2.0))
# Loose gradient tolerance (Optuna's): finer hyperparameters do not change the suggestion.
FIT_GTOL = 1e-2
FIT_MAXITER = 100


@dataclass(frozen=True)
class KernelParams:
    """Hyperparameters in log space: ``(dim + 2,)`` = log lengthscales, log scale, log noise."""

    raw: np.ndarray

    @property
    def lengthscales(self) -> np.ndarray:
        return np.exp(self.raw[:-2])


def default_params(dim: int) -> KernelParams:
    loc = math.sqrt(2.0) + 0.5 * math.log(dim)
    return KernelParams(np.concatenate([np.full(dim, loc), [0.0, math.log(1e-3)]]))


class _Matern52(torch.autograd.Function):
    """Matern 5/2 of the squared distance, with its derivative computed in the forward pass.

    Autograd through ``sqrt`` is infinite at distance 0 and costs several small kernels; the
    closed form -5/6 (1 + d) exp(-d) is exact everywhere (Optuna's ``Matern52Kernel``).
    """

    @staticmethod
    def forward(ctx: Any, sqdist: torch.Tensor) -> torch.Tensor:
        d = torch.sqrt(5.0 * sqdist)
        e = torch.exp(-d)
        ctx.save_for_backward((-5.0 / 6.0) * (1.0 + d) * e)
        return (1.0 + d + (5.0 / 3.0) * sqdist) * e

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (deriv,) = ctx.saved_tensors
        return deriv * grad


def _matern52(sqdist: torch.Tensor) -> torch.Tensor:
    return _Matern52.apply(sqdist)  # type: ignore[no-any-return]


def _sq_diff(
    x1: torch.Tensor, x2: torch.Tensor, is_cat: torch.Tensor, any_cat: bool
) -> torch.Tensor:
    """(..., n1, n2, dim) per-coordinate squared distances (Hamming on categoricals)."""
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    sq = diff * diff
    if any_cat:
        sq = torch.where(is_cat, (sq > 1e-18).to(sq.dtype), sq)
    return sq


class GP:
    """A fitted GP: posterior mean and variance at query points, fantasies for pending points."""

    def __init__(
        self, X: np.ndarray, y: np.ndarray, is_categorical: np.ndarray, params: KernelParams
    ) -> None:
        self.is_cat = torch.from_numpy(np.asarray(is_categorical, dtype=bool))
        self.any_cat = bool(self.is_cat.any())
        self.params = params
        raw = torch.from_numpy(params.raw)
        self.inv_sq_ls = torch.exp(-2.0 * raw[:-2])  # (dim,)
        self.scale = float(torch.exp(raw[-2]))
        self.noise = float(torch.exp(raw[-1])) + MIN_NOISE
        self._set_data(torch.from_numpy(X), torch.from_numpy(y))

    def _set_data(
        self, X: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None = None
    ) -> None:
        self.X = X  # (n, dim)
        self.y = y  # (n,)
        if noise is None:
            noise = torch.full((len(X),), self.noise, dtype=X.dtype)
        self.noise_diag = noise  # (n,)
        K = self.kernel(X, X)
        K.diagonal().add_(noise)
        self.L = _cholesky(K)  # (n, n)
        self.alpha = torch.cholesky_solve(y.unsqueeze(-1), self.L).squeeze(-1)  # (n,)

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        sq = _sq_diff(x1, x2, self.is_cat, self.any_cat)
        return self.scale * _matern52(sq @ self.inv_sq_ls)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal mean and variance at ``x`` (..., dim), each (...,)."""
        k = self.kernel(x, self.X)  # (..., n)
        mean = k @ self.alpha
        v = torch.linalg.solve_triangular(self.L, k.unsqueeze(-1), upper=False).squeeze(-1)
        var = (self.scale - (v * v).sum(-1)).clamp_min(1e-12)
        return mean, var

    def joint_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (..., q) and covariance (..., q, q) at ``x`` (..., q, dim)."""
        k = self.kernel(x, self.X)  # (..., q, n)
        mean = k @ self.alpha
        v = torch.linalg.solve_triangular(self.L, k.transpose(-1, -2), upper=False)  # (..., n, q)
        cov = self.kernel(x, x) - v.transpose(-1, -2) @ v
        cov = cov + 1e-9 * torch.eye(x.shape[-2], dtype=x.dtype)
        return mean, cov

    # -- the NumPy fast path: values and gradients without autograd ---------------------------
    # The acquisition optimizer calls the posterior a few dozen times on a handful of points;
    # at that size a torch graph costs more in per-operation overhead than in arithmetic, so
    # the optimizer uses closed-form gradients in NumPy (about four times faster).
    def _np_cache(self) -> tuple[np.ndarray, ...]:
        cache = self.__dict__.get("_np")
        if cache is None:
            X = self.X.numpy()
            L = self.L.numpy()
            eye = np.eye(len(X))
            L_inv = scipy.linalg.solve_triangular(L, eye, lower=True)  # (n, n)
            cache = (X, self.alpha.numpy(), L_inv, self.inv_sq_ls.numpy(), self.is_cat.numpy())
            self.__dict__["_np"] = cache
        return cache

    def posterior_np(
        self, x: np.ndarray, cont: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Mean and variance (b,) at ``x`` (b, dim) and, when ``cont`` (indices of continuous
        coordinates) is given, their gradients (b, len(cont)) with respect to those."""
        X, alpha, L_inv, inv_sq, is_cat = self._np_cache()
        diff = x[:, None, :] - X[None, :, :]  # (b, n, dim)
        sq = diff * diff
        if self.any_cat:
            sq[..., is_cat] = sq[..., is_cat] > 1e-18
        r2 = sq @ inv_sq  # (b, n)
        d = np.sqrt(5.0 * r2)
        e = np.exp(-d)
        k = self.scale * (1.0 + d + (5.0 / 3.0) * r2) * e  # (b, n)
        v = k @ L_inv.T  # (b, n)
        mean = k @ alpha
        var = np.maximum(self.scale - np.einsum("bn,bn->b", v, v), 1e-12)
        if cont is None:
            return mean, var, None, None
        G = self.scale * (-5.0 / 6.0) * (1.0 + d) * e  # dk / d r2, (b, n)
        dc = diff[..., cont] * (2.0 * inv_sq[cont])  # d r2 / dx, (b, n, c)
        dmean = np.einsum("bn,bnc->bc", G * alpha, dc)
        w = v @ L_inv  # k K^-1, (b, n)
        dvar = -2.0 * np.einsum("bn,bnc->bc", G * w, dc)
        return mean, var, dmean, dvar

    def with_fantasies(self, X_new: np.ndarray) -> GP:
        """A copy conditioned on ``X_new`` observed at the posterior mean (kriging believer).

        The mean is unchanged, the variance shrinks around ``X_new``: pending points repel new
        suggestions without a refit, as sequential greedy batch selection needs.
        """
        if len(X_new) == 0:
            return self
        x = torch.from_numpy(np.asarray(X_new, dtype=float))
        with torch.no_grad():
            mean, _ = self.posterior(x)
        out = object.__new__(GP)
        out.__dict__.update(self.__dict__)
        out.__dict__.pop("_np", None)
        # The believed values are of the latent function (no observation noise): a point next to
        # a pending one then has almost no variance left, so it has almost no improvement, as
        # in a joint q-point acquisition; noisy fantasies would leave it the noise's variance.
        noise = torch.cat([self.noise_diag, torch.full((len(x),), MIN_NOISE, dtype=x.dtype)])
        out._set_data(torch.cat([self.X, x]), torch.cat([self.y, mean]), noise)
        return out


def _cholesky(K: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(K)
    jitter = 1e-8
    while int(info) != 0 and jitter < 1.0:
        K = K.clone()
        K.diagonal().add_(jitter)
        L, info = torch.linalg.cholesky_ex(K)
        jitter *= 10
    return L


def _neg_log_posterior(
    raw: torch.Tensor,
    sq: torch.Tensor,
    y: torch.Tensor,
    ls_loc: float,
) -> torch.Tensor:
    n = y.shape[0]
    log_ls, log_scale, log_noise = raw[:-2], raw[-2], raw[-1]
    K = torch.exp(log_scale) * _matern52(sq @ torch.exp(-2.0 * log_ls))
    K = K + (torch.exp(log_noise) + MIN_NOISE) * torch.eye(n, dtype=K.dtype)
    L = torch.linalg.cholesky(K)
    a = torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False).squeeze(-1)
    mll = -0.5 * (a @ a) - L.diagonal().log().sum()
    noise = torch.exp(log_noise)
    # Densities of the hyperparameters themselves (as GPyTorch's priors), not of their logs.
    log_prior = (
        -((log_ls - ls_loc) ** 2).sum() / (2 * 3.0)
        - log_ls.sum()  # LogNormal(loc, sqrt(3))
        - 0.5 * log_scale**2
        - log_scale  # LogNormal(0, 1)
        + 0.1 * log_noise
        - 30.0 * noise  # Gamma(1.1, 30)
    )
    return -(mll + log_prior)


def _neg_log_posterior_np(
    raw: np.ndarray, sq: np.ndarray, y: np.ndarray, ls_loc: float
) -> tuple[float, np.ndarray]:
    """``_neg_log_posterior`` and its gradient in closed form (no autograd).

    d log p(y) / d theta = 1/2 tr((alpha alpha^T - K^-1) dK / d theta) (Rasmussen & Williams,
    eq. 5.9); at the sizes of a tuning study this is several times faster than back-propagation
    through torch, and the fit runs at every suggestion.
    """
    n, dim = len(y), sq.shape[-1]
    log_ls, log_scale, log_noise = raw[:dim], raw[dim], raw[dim + 1]
    inv_sq = np.exp(-2.0 * log_ls)
    scale, noise = math.exp(log_scale), math.exp(log_noise)
    r2 = sq @ inv_sq  # (n, n)
    d = np.sqrt(5.0 * r2)
    e = np.exp(-d)
    Kf = scale * (1.0 + d + (5.0 / 3.0) * r2) * e
    K = Kf + (noise + MIN_NOISE) * np.eye(n)
    c = scipy.linalg.cho_factor(K, lower=True, check_finite=False)
    alpha = scipy.linalg.cho_solve(c, y, check_finite=False)
    K_inv = scipy.linalg.cho_solve(c, np.eye(n), check_finite=False)
    mll = -0.5 * float(y @ alpha) - float(np.log(np.diagonal(c[0])).sum())
    W = np.outer(alpha, alpha) - K_inv  # (n, n)
    G = scale * (-5.0 / 6.0) * (1.0 + d) * e  # dK / d r2
    g_ls = 0.5 * np.einsum("ab,abj->j", W * G, sq) * (-2.0 * inv_sq)
    g_scale = 0.5 * float(np.sum(W * Kf))
    g_noise = 0.5 * float(np.trace(W)) * noise
    log_prior = (
        -float(((log_ls - ls_loc) ** 2).sum()) / 6.0
        - float(log_ls.sum())
        - 0.5 * log_scale**2
        - log_scale
        + 0.1 * log_noise
        - 30.0 * noise
    )
    gp_ls = -(log_ls - ls_loc) / 3.0 - 1.0
    gp_scale = -log_scale - 1.0
    gp_noise = 0.1 - 30.0 * noise
    grad = np.concatenate([g_ls + gp_ls, [g_scale + gp_scale, g_noise + gp_noise]])
    return -(mll + log_prior), -grad


def fit_gp(
    X: np.ndarray,
    y: np.ndarray,
    is_categorical: np.ndarray,
    *,
    init: KernelParams | None = None,
) -> GP:
    """Fit the hyperparameters by MAP and return the conditioned GP.

    Args:
        X: (n, dim) inputs in the unit cube.
        y: (n,) standardized targets.
        is_categorical: (dim,) bool mask of categorical coordinates.
        init: the previous fit's hyperparameters to start from (a warm start), if any.
    """
    dim = X.shape[1]
    is_cat = torch.from_numpy(np.asarray(is_categorical, dtype=bool))
    Xt = torch.from_numpy(X)
    sq = _sq_diff(Xt, Xt, is_cat, bool(is_cat.any()))  # (n, n, dim)
    ls_loc = math.sqrt(2.0) + 0.5 * math.log(dim)
    bounds = [LOG_LENGTHSCALE_BOUNDS] * dim + [LOG_SCALE_BOUNDS, LOG_NOISE_BOUNDS]

    sq_np, y_np = sq.numpy(), np.asarray(y, dtype=float)

    def fun(raw_np: np.ndarray) -> tuple[float, np.ndarray]:
        return _neg_log_posterior_np(raw_np, sq_np, y_np, ls_loc)

    starts = [default_params(dim)] if init is None else [init, default_params(dim)]
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        x0 = np.clip(start.raw, [b[0] for b in bounds], [b[1] for b in bounds])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = scipy.optimize.minimize(
                    fun,
                    x0,
                    jac=True,
                    method="L-BFGS-B",
                    bounds=bounds,
                    options={"gtol": FIT_GTOL, "maxiter": FIT_MAXITER},
                )
        except (RuntimeError, ValueError):  # a non-PD kernel matrix on the way: next start
            continue
        if np.isfinite(res.fun) and (best is None or res.fun < best[0]):
            best = (float(res.fun), res.x)
        if best is not None:
            break  # the warm start worked: no restart
    raw = best[1] if best is not None else default_params(dim).raw
    return GP(X, y, is_categorical, KernelParams(np.asarray(raw, dtype=float)))
