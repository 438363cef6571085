"""Acquisition functions of the LogEI family (Ament et al., "Unexpected Improvements to Expected
Improvement for Bayesian Optimization", NeurIPS 2023).

Every acquisition maps a batch of points ``x`` (b, dim) to values (b,) to be maximized.

* ``LogEI``: single objective. With fantasies for pending points (see ``GP.with_fantasies``) and
  a noisy incumbent (the best posterior mean at the observed feasible points) this is the
  sequential-greedy, analytic form of qLogNEI; its constrained form adds the log probability of
  feasibility of each outcome constraint (Gardner et al. 2014, BoTorch's
  ``LogConstrainedExpectedImprovement``).
* ``LogPoF``: the log probability that every constraint holds, maximized while no feasible
  point is known (the feasibility-seeking phase).
* ``make_qlognehvi``: several objectives, BoTorch's ``qLogNoisyExpectedHypervolumeImprovement``
  on our GPs (wrapped as a BoTorch ``Model``), constraints feasibility-weighted by BoTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from botorch.acquisition.analytic import _log_ei_helper
from botorch.utils.probability.utils import log_ndtr

from autotune._gp.gp import GP


@dataclass
class ConstraintModel:
    """A GP of a constraint metric (standardized) that is feasible when ``value <= bound``."""

    gp: GP
    bound: float


def _log_pof(constraints: Sequence[ConstraintModel], x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(x.shape[:-1], dtype=x.dtype)
    for c in constraints:
        mean, var = c.gp.posterior(x)
        out = out + log_ndtr((c.bound - mean) / var.sqrt())
    return out


class LogEI:
    """log E[max(f(x) - best, 0)] plus the log probability of feasibility of the constraints."""

    def __init__(self, gp: GP, best: float, constraints: Sequence[ConstraintModel] = ()) -> None:
        self.gp = gp
        self.best = best
        self.constraints = list(constraints)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.gp.posterior(x)
        sigma = var.sqrt()
        value = _log_ei_helper((mean - self.best) / sigma) + sigma.log()
        if self.constraints:
            value = value + _log_pof(self.constraints, x)
        return value


class LogPoF:
    """log P(every constraint holds): the target until a feasible point is known."""

    def __init__(self, constraints: Sequence[ConstraintModel]) -> None:
        self.constraints = list(constraints)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _log_pof(self.constraints, x)


def make_qlognehvi(
    objectives: Sequence[GP],
    constraints: Sequence[ConstraintModel],
    *,
    X_baseline: torch.Tensor,
    ref_point: torch.Tensor,
    X_pending: torch.Tensor | None,
    seed: int,
    n_mc: int = 64,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """qLogNEHVI with q = 1 on independent GPs, pending points as X_pending.

    Args:
        objectives: one GP per objective, all maximized (standardized).
        constraints: feasible when each GP's value is at most its bound.
        X_baseline: (n, dim) observed points.
        ref_point: (n_objectives,) reference point in the standardized, maximized space.
        X_pending: (p, dim) running points, or None.
        seed: seed of the quasi-MC base samples.
        n_mc: number of quasi-MC samples.
    """
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.sampling.normal import SobolQMCNormalSampler

    from autotune._gp.botorch_model import IndependentGPs

    model = IndependentGPs([*objectives, *(c.gp for c in constraints)])
    m = len(objectives)
    cons = [(lambda Z, i=m + j, b=c.bound: Z[..., i] - b) for j, c in enumerate(constraints)]
    from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective

    acq = qLogNoisyExpectedHypervolumeImprovement(
        model=model,
        ref_point=ref_point,
        X_baseline=X_baseline,
        sampler=SobolQMCNormalSampler(sample_shape=torch.Size([n_mc]), seed=seed),
        objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))),
        constraints=cons or None,
        X_pending=X_pending,
        prune_baseline=True,
        cache_root=False,
    )

    def f(x: torch.Tensor) -> torch.Tensor:
        return acq(x.unsqueeze(-2))

    return f
