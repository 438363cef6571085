"""A trainer that sleeps: fixed-duration trials for benchmarks and cluster smoke tests.

``sleep`` ignores the data, sleeps ``duration_s`` in ``steps`` equal parts (reporting after each)
and returns ``loss``: the sum of squares of the numeric parameters, so a designer has something
to minimize. It measures the runner and the service, not a learning library.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from trainers._base import (
    Reporter,
    TrainData,
    Trainer,
    TrainerOptions,
    TrainResult,
    register_trainer,
    report_all,
)

__all__ = ["SleepTrainer", "SleepOptions"]


class SleepOptions(TrainerOptions):
    duration_s: float = Field(default=1.0, ge=0.0, le=86_400.0)
    steps: int = Field(default=1, ge=1, le=100_000)


def synthetic_loss(params: Mapping[str, Any]) -> float:
    return float(
        sum(
            float(v) ** 2
            for v in params.values()
            if isinstance(v, int | float) and not isinstance(v, bool)
        )
    )


@register_trainer
class SleepTrainer(Trainer):
    name: ClassVar[str] = "sleep"
    Options: ClassVar[type[TrainerOptions]] = SleepOptions

    def metrics(self, task: str) -> tuple[str, ...]:
        return ("loss",)

    def fit(
        self,
        params: Mapping[str, Any],
        data: TrainData,
        *,
        reporter: Reporter | None = None,
        metric: str | None = None,
        seed: int = 0,
    ) -> TrainResult:
        opts: SleepOptions = self.options  # type: ignore[assignment]
        reporter = report_all(reporter)
        loss = synthetic_loss(params)
        start = time.perf_counter()
        for step in range(opts.steps):
            # Sleep to an absolute deadline so per-step overheads do not add up.
            deadline = start + opts.duration_s * (step + 1) / opts.steps
            time.sleep(max(0.0, deadline - time.perf_counter()))
            if reporter.report(step, loss * (1.0 + (opts.steps - 1 - step) / opts.steps)):
                return TrainResult(metrics={"loss": loss}, steps=step + 1, stopped=True)
        return TrainResult(metrics={"loss": loss}, steps=opts.steps)
