"""``algorithm="auto"``: the default designer, which picks a strategy per study and says why.

Today every study gets the GP engine (:class:`~autotune.designers.gp.GPDesigner`) with a Sobol'
initial design sized by dimension and the large-study subset past ``MAX_FIT_POINTS`` trials;
``auto`` chooses those settings for the study's space and objectives and records the choice, so
the study's details show which designer ran, in which phase, and why. Spaces whose every
configuration has already been tried get plain random search (nothing left for a model to find).

Multi-fidelity: in a study whose stopper (ASHA, Hyperband) has ended trials early, the service
hands ``auto`` the finished trials' learning curves, and once at least ``MIN_PRUNED_FOR_BOHB``
pruned trials carry one, ``auto`` switches to BOHB-style model-based sampling
(:class:`~autotune.designers.bohb.BOHBDesigner`), which learns from those cheap evaluations at
the largest budget enough trials reached, rather than from the few full-length trials alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autotune.designers._base import Designer, Problem, register_designer
from autotune.designers.bohb import BOHBDesigner
from autotune.designers.gp import MAX_FIT_POINTS, GPDesigner, default_n_initial
from autotune.designers.random import RandomDesigner
from autotune.models import Trial, TrialState
from autotune.space import Params

# Pruned trials with curves needed before their cheap evaluations outweigh the full ones.
MIN_PRUNED_FOR_BOHB = 3


def _n_configs(problem: Problem) -> float:
    """Number of distinct configurations (inf when a parameter is continuous), an upper bound."""
    total = 1.0
    for p in problem.space.values():
        n = p.n_levels
        if n is None:
            return math.inf
        total *= n
    return total


@register_designer("auto")
class AutoDesigner(Designer):
    """Chooses the initial design, the GP engine and the large-study strategy per study."""

    name = "auto"

    def __init__(self, **gp_options: Any) -> None:
        self._gp = GPDesigner(**gp_options)
        self._bohb = BOHBDesigner()
        self._info: dict[str, Any] = {"designer": self.name, "phase": "not started"}

    def describe(self) -> dict[str, Any]:
        return dict(self._info)

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        n_seen = len(completed) + len(pending)
        if n_seen + count > _n_configs(problem):
            self._info = {
                "designer": self.name,
                "engine": "random",
                "phase": "random search",
                "reason": "the space has no configuration left that has not been tried",
            }
            return RandomDesigner().suggest(
                problem, completed=completed, pending=pending, count=count, seed=seed
            )
        n_pruned = sum(1 for t in completed if t.state == TrialState.PRUNED and t.intermediate)
        if n_pruned >= MIN_PRUNED_FOR_BOHB and len(problem.objectives) == 1:
            out = self._bohb.suggest(
                problem, completed=completed, pending=pending, count=count, seed=seed
            )
            self._info = {
                "designer": self.name,
                "engine": "bohb",
                "phase": "multi-fidelity model-based sampling",
                "reason": f"the study's stopper ended {n_pruned} trials early; BOHB learns from "
                "their learning curves (cheap evaluations), not only from full-length trials",
            }
            return out
        out = self._gp.suggest(
            problem, completed=completed, pending=pending, count=count, seed=seed
        )
        gp_info = self._gp.describe()
        n_initial = self._gp.n_initial or default_n_initial(problem.space.dim)
        multi = len(problem.objectives) > 1
        self._info = {
            "designer": self.name,
            "engine": "gp",
            "phase": gp_info.get("phase"),
            "reason": gp_info.get("reason"),
            "initial_design": f"sobol, {n_initial} points for {problem.space.dim} parameters",
            "acquisition": gp_info.get("acquisition", "LogEHVI" if multi else "LogEI"),
            "large_study": f"fit on a subset of {MAX_FIT_POINTS} trials past {MAX_FIT_POINTS}",
        }
        return out
