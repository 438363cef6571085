"""Studies and trials built in memory for the figure tests: no service, no database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from autotune.models import Measurement, Study, Trial

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "depth": {"type": "int", "low": 1, "high": 8},
    "kernel": {"type": "categorical", "choices": ["linear", "rbf"]},
    "gamma": {"type": "float", "low": 0.01, "high": 10.0, "condition": {"kernel": ["rbf"]}},
}


def make_study(
    objectives: dict[str, str] | None = None, space: dict[str, Any] | None = None, **kw: Any
) -> Study:
    return Study(
        id=1,
        name=kw.pop("name", "s"),
        space=space or SPACE,
        objectives=objectives or {"loss": "minimize"},
        seed=0,
        created_at=T0,
        updated_at=T0,
        **kw,
    )


def loss_of(p: dict[str, Any]) -> float:
    # lr matters most, depth a little, kernel not at all.
    return abs(math.log10(p["lr"]) + 2.0) + 0.05 * p["depth"]


def make_trials(n: int, *, seed: int = 0, multi: bool = False) -> list[Trial]:
    """``n`` trials: mostly completed, some pruned (with curves), failed and running; about
    half with the conditional ``gamma``; every 4th trial reported a learning curve."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kernel = "rbf" if rng.random() < 0.5 else "linear"
        p: dict[str, Any] = {
            "lr": float(10 ** rng.uniform(-4, 0)),
            "depth": int(rng.integers(1, 9)),
            "kernel": kernel,
        }
        if kernel == "rbf":
            p["gamma"] = float(rng.uniform(0.01, 10))
        loss = loss_of(p)
        state = "completed"
        if i % 10 == 7:
            state = "pruned"
        elif i % 10 == 8:
            state = "failed"
        elif i == n - 1:
            state = "running"
        values: dict[str, float] | None = None
        if state == "completed":
            values = {"loss": loss}
            if multi:
                values["time"] = float(p["depth"] + rng.random())
        elif state == "pruned":
            values = {"loss": loss + 1.0}
        curve = []
        if i % 4 == 0 or state == "pruned":
            curve = [Measurement(step=s, value=loss + 1.0 / (s + 1)) for s in range(5)]
        created = T0 + timedelta(seconds=10 * i)
        out.append(
            Trial(
                number=i,
                state=state,
                params=p,
                values=values,
                intermediate=curve,
                client_id=f"worker-{i % 3}",
                error="ValueError: boom" if state == "failed" else None,
                created_at=created,
                completed_at=None if state == "running" else created + timedelta(seconds=8),
                heartbeat_at=created,
            )
        )
    return out


def seed_service_study(
    svc: Any, name: str, n: int, *, multi: bool = False, curves_every: int = 5
) -> None:
    """Create study ``name`` on a real service with ``n`` trials in every state: completed,
    pruned (after a curve), failed (with an error), running, and learning curves."""
    objectives = {"loss": "minimize", "time": "minimize"} if multi else {"loss": "minimize"}
    svc.create_study(
        {"name": name, "space": SPACE, "objectives": objectives, "algorithm": "random", "seed": 7}
    )
    trials = []
    while len(trials) < n:
        trials += svc.suggest(name, count=min(1000, n - len(trials))).trials
    for i, t in enumerate(trials):
        loss = loss_of(t.params)
        if i % curves_every == 0:
            for step in range(5):
                svc.report(name, t.number, step=step, value=loss + 1.0 / (step + 1))
        if i % 10 == 7:
            svc.fail(name, t.number, reason=f"ValueError: trial {t.number} diverged")
        elif i == n - 1:
            continue  # stays running
        else:
            values = {"loss": loss}
            if multi:
                values["time"] = float(t.params["depth"])
            svc.observe(name, t.number, values)
