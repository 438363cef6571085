"""``algorithm="auto"``: the default designer, which picks a strategy per study and says why.

Today every study gets the GP engine (:class:`~autotune.designers.gp.GPDesigner`) with a Sobol'
initial design sized by dimension and the large-study subset past ``MAX_FIT_POINTS`` trials;
``auto`` chooses those settings for the study's space and objectives and records the choice, so
the study's details show which designer ran, in which phase, and why. Spaces whose every
configuration has already been tried get plain random search (nothing left for a model to find).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autotune.designers._base import Designer, Problem, register_designer
from autotune.designers.gp import MAX_FIT_POINTS, GPDesigner, default_n_initial
from autotune.designers.random import RandomDesigner
from autotune.models import Trial
from autotune.space import Params


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
