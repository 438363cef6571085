"""Uniform random search over the unit-cube encoding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autotune.designers._base import Designer, Problem, register_designer
from autotune.models import Trial
from autotune.space import Params


@register_designer("random")
class RandomDesigner(Designer):
    """Independent uniform draws; each call's stream is keyed by the seed and the history size."""

    name = "random"

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        rng = np.random.default_rng([seed, len(completed) + len(pending)])
        return problem.space.sample(rng, count)
