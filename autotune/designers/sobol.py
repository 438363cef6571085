"""Scrambled Sobol' points (Owen scrambling), continuing one sequence across calls."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from scipy.stats import qmc

from autotune.designers._base import Designer, Problem, register_designer
from autotune.models import Trial
from autotune.space import Params


@register_designer("sobol")
class SobolDesigner(Designer):
    """Point ``i`` of the study's scrambled Sobol' sequence goes to the ``i``-th configuration.

    The sequence is fixed by the seed; the position is the number of configurations already
    handed out (finished plus running), so successive calls continue the same low-discrepancy
    sequence rather than restarting it.
    """

    name = "sobol"

    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        engine = qmc.Sobol(d=problem.space.dim, scramble=True, seed=seed % 2**32)
        start = len(completed) + len(pending)
        if start:
            engine.fast_forward(start)
        with warnings.catch_warnings():
            # Balance holds for the whole sequence; single draws are what a service hands out.
            warnings.filterwarnings("ignore", message=".*balance properties.*")
            points = engine.random(count)  # (count, dim)
        return [problem.space.decode(p) for p in points]
