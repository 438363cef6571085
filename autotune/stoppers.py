"""Stoppers: rules that end weak trials early, as pure functions of intermediate values.

A stopper sees the reporting trial's learning curve and the other trials' curves (running and
finished) and answers ``should_stop``. Like the designers, stoppers touch no database, no HTTP
and no clock: the service loads the curves, asks the stopper, and stores the answer in one
transaction, so decisions are the same in tests, benchmarks and production.

For several objectives, the curves hold the intermediate values of the study's *primary*
objective (the first one declared); ``report`` carries a single value, and it is compared in
that objective's direction.

Built-in rules (``{"type": ...}`` in a study's ``stopper``):

- ``none``: never stops.
- ``median``: the median stopping rule of Google Vizier (Golovin et al., 2017): stop when the
  trial's best value so far is worse than the median of the other trials' running averages up
  to the same step.
- ``percentile``: the same against a percentile (``percentile=25`` keeps the top quarter).
- ``asha``: asynchronous successive halving (Li et al., 2020, "A System for Massively Parallel
  Hyperparameter Tuning"): rungs at ``min_resource * eta**k``; a trial continues past a rung only
  if its value there is in the top ``1/eta`` of the values recorded at that rung, or if a
  learning-curve guard spares it: its curve, continued optimistically to the next rung, would
  still beat the best final value of the trials that got there (``extrapolation``, on by
  default; see :class:`AshaStopper`).
- ``hyperband``: several ASHA brackets with different minimum resources (Li et al., 2018);
  trials are assigned to brackets deterministically by number.
- ``patience``: stop when the best value has not improved by ``min_delta`` for ``patience``
  steps, or when a value falls outside ``[lower, upper]`` (a threshold rule).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from autotune.errors import ValidationError
from autotune.models import Direction, TrialState

__all__ = [
    "Curve",
    "Stopper",
    "make_stopper",
    "stopper_names",
    "validate_stopper_config",
]


@dataclass(frozen=True)
class Curve:
    """One trial's intermediate values of the primary objective, by step."""

    number: int
    state: TrialState
    values: Mapping[int, float] = field(default_factory=dict)

    @property
    def last_step(self) -> int | None:
        return max(self.values) if self.values else None

    def value_at_or_after(self, step: int) -> float | None:
        """The value at the first reported step >= ``step`` (where the trial crossed it)."""
        later = [s for s in self.values if s >= step]
        return self.values[min(later)] if later else None

    def best_up_to(self, step: int, direction: Direction) -> float | None:
        vals = [v for s, v in self.values.items() if s <= step and math.isfinite(v)]
        if not vals:
            return None
        return min(vals) if direction == Direction.MINIMIZE else max(vals)

    def mean_up_to(self, step: int) -> float | None:
        vals = [v for s, v in self.values.items() if s <= step and math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None


class Stopper(ABC):
    """Decides whether the trial that just reported should stop."""

    name: ClassVar[str]

    @abstractmethod
    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        """``trial`` has just reported its latest step; ``others`` are every other trial."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _worse(a: float, b: float, direction: Direction) -> bool:
    return a > b if direction == Direction.MINIMIZE else a < b


_REGISTRY: dict[str, tuple[type[_Config], Callable[[Any], Stopper]]] = {}


def register_stopper(
    name: str, config: type[_Config]
) -> Callable[[Callable[[Any], Stopper]], Callable[[Any], Stopper]]:
    def deco(factory: Callable[[Any], Stopper]) -> Callable[[Any], Stopper]:
        if name in _REGISTRY:
            raise ValueError(f"stopper {name!r} is already registered")
        _REGISTRY[name] = (config, factory)
        return factory

    return deco


def stopper_names() -> list[str]:
    return sorted(_REGISTRY)


def validate_stopper_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check a study's ``stopper`` and return it with defaults filled in.

    Raises:
        ValidationError: naming ``stopper.<key>`` and what is allowed.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or "type" not in config:
        raise ValidationError(
            f'stopper must be an object with a "type", one of {stopper_names()}',
            field="stopper",
        )
    kind = config["type"]
    if kind not in _REGISTRY:
        raise ValidationError(
            f"unknown stopper type {kind!r}; choose one of {stopper_names()}",
            field="stopper.type",
        )
    schema, _ = _REGISTRY[kind]
    try:
        parsed = schema.model_validate({k: v for k, v in config.items() if k != "type"})
    except PydanticValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValidationError(f"stopper.{loc}: {err['msg']}", field=f"stopper.{loc}") from None
    return {"type": kind, **parsed.model_dump()}


def make_stopper(config: Mapping[str, Any] | None) -> Stopper:
    cfg = validate_stopper_config(config) or {"type": "none"}
    schema, factory = _REGISTRY[cfg["type"]]
    return factory(schema.model_validate({k: v for k, v in cfg.items() if k != "type"}))


# --- none ---------------------------------------------------------------------------------


class NoneConfig(_Config):
    pass


class NoStopper(Stopper):
    name = "none"

    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        return False


register_stopper("none", NoneConfig)(lambda cfg: NoStopper())


# --- median / percentile --------------------------------------------------------------------


class PercentileConfig(_Config):
    percentile: float = Field(50.0, gt=0, lt=100, description="Keep trials above this.")
    min_trials: int = Field(5, ge=1, description="Finished trials needed before any stop.")
    warmup_steps: int = Field(0, ge=0, description="Never stop at or before this step.")
    interval_steps: int = Field(1, ge=1, description="Decide only every this many steps.")


class MedianConfig(_Config):
    min_trials: int = Field(5, ge=1)
    warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)


class PercentileStopper(Stopper):
    """Stop when the best value so far is worse than the ``percentile``-th of the others'
    running averages at the same step (Vizier's median rule at 50)."""

    name = "percentile"

    def __init__(self, cfg: PercentileConfig) -> None:
        self.cfg = cfg

    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        step = trial.last_step
        if step is None or step <= self.cfg.warmup_steps:
            return False
        if (step - self.cfg.warmup_steps) % self.cfg.interval_steps:
            return False
        finished = [c for c in others if c.state in (TrialState.COMPLETED, TrialState.PRUNED)]
        if len(finished) < self.cfg.min_trials:
            return False
        refs = [m for c in finished if (m := c.mean_up_to(step)) is not None]
        if not refs:
            return False
        best = trial.best_up_to(step, direction)
        if best is None:  # only NaN so far
            return True
        # "Better" fraction: for minimization the threshold is the p-th lowest average.
        q = self.cfg.percentile if direction == Direction.MINIMIZE else 100 - self.cfg.percentile
        return _worse(best, _percentile(refs, q), direction)


def _percentile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


register_stopper("percentile", PercentileConfig)(PercentileStopper)
register_stopper("median", MedianConfig)(
    lambda cfg: PercentileStopper(PercentileConfig(percentile=50.0, **cfg.model_dump()))
)


# --- ASHA and Hyperband ---------------------------------------------------------------------


Extrapolation = Literal["log", "linear", "none"]

# The secant that estimates a curve's slope at a rung spans this fraction of the rung's steps:
# long enough to average out the step-to-step noise of stochastic training (row subsampling,
# dropout), short enough to stay local. On a convex curve a secant ending at the rung is steeper
# than the tangent there, so the extrapolation stays optimistic.
_SLOPE_WINDOW = 0.25


class AshaConfig(_Config):
    min_resource: int = Field(1, ge=1, description="Step of the first rung.")
    reduction_factor: int = Field(3, ge=2, description="eta: keep the top 1/eta at each rung.")
    min_early_stopping_rate: int = Field(0, ge=0, description="s: first rung at r * eta**s.")
    bootstrap_count: int = Field(
        0, ge=0, description="Values a rung needs before it stops anything."
    )
    extrapolation: Extrapolation = Field(
        "log",
        description="Spare a trial ASHA would stop when its optimistic extrapolation to the "
        "next rung beats the best value of the trials that got there: 'log' (a tangent in "
        "log-steps, power-law curves), 'linear' (a tangent in steps), 'none' (plain ASHA).",
    )


class AshaStopper(Stopper):
    """Asynchronous successive halving with a learning-curve guard.

    A trial stops at the first rung it reaches where its value is not in the top ``1/eta`` of
    the values recorded at that rung so far (always promoted while it is the best there, as when
    the rung is still nearly empty) **and** the guard does not spare it.

    The guard (``extrapolation``, on by default) protects slow starters, such as boosting with a
    small learning rate, whose value at an early rung ranks low but which end best. Like
    Domhan et al. (2015, "Speeding up Automatic Hyperparameter Optimization of Deep Neural
    Networks by Extrapolation of Learning Curves"), it asks whether the trial could still beat
    the best result seen (``y_best``), but with a deterministic optimistic bound instead of a
    sampled curve model: the curve is continued along its secant over the last
    ``_SLOPE_WINDOW`` of the rung's steps, in log-steps (``"log"``: a tangent of a power-law
    curve ``a + b * t**-c``, convex in log t) or in steps (``"linear"``: any convex curve), up
    to the horizon ``h`` = the next rung, capped at the furthest step any trial reached. A
    convex curve never falls below its tangent, so the continued value bounds what the trial
    can reach at ``h``. The trial is spared when that bound beats the best current value (the
    final value, for finished trials) of the other trials that reached ``h``; it then faces
    the next rung as usual. Without such trials (nothing reached ``h`` yet) or without an
    earlier point on its curve, plain ASHA decides.
    """

    name = "asha"

    def __init__(self, cfg: AshaConfig) -> None:
        self.cfg = cfg

    def rung_steps(self, max_step: int) -> list[int]:
        eta, r, s = (
            self.cfg.reduction_factor,
            self.cfg.min_resource,
            self.cfg.min_early_stopping_rate,
        )
        steps = []
        k = 0
        while (step := r * eta ** (s + k)) <= max_step:
            steps.append(step)
            k += 1
        return steps

    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        step = trial.last_step
        if step is None:
            return False
        eta = self.cfg.reduction_factor
        for rung_step in self.rung_steps(step):
            value = trial.value_at_or_after(rung_step)
            assert value is not None
            if math.isnan(value):
                return True
            competing = [value] + [
                v
                for c in others
                if (v := c.value_at_or_after(rung_step)) is not None and not math.isnan(v)
            ]
            if len(competing) <= self.cfg.bootstrap_count:
                return True
            k = max(len(competing) // eta, 1)  # how many this rung promotes
            ranked = sorted(competing, reverse=direction == Direction.MAXIMIZE)
            if _worse(value, ranked[k - 1], direction) and not self._spared(
                trial, rung_step, others, direction=direction
            ):
                return True
        return False

    def _spared(
        self, trial: Curve, rung_step: int, others: Sequence[Curve], *, direction: Direction
    ) -> bool:
        """The learning-curve guard: could the trial, continued optimistically from the rung,
        beat at the horizon the best current value of the trials that reached it?"""
        if self.cfg.extrapolation == "none":
            return False
        at = min(s for s in trial.values if s >= rung_step)  # where the trial crossed the rung
        last = {c.number: c.last_step for c in others if c.last_step is not None}
        furthest = max(last.values(), default=at)
        horizon = min(rung_step * self.cfg.reduction_factor, furthest)
        if horizon <= at:
            return False
        earlier = [s for s in trial.values if s < at and math.isfinite(trial.values[s])]
        if not earlier:
            return False
        target = at - max(1, round(rung_step * _SLOPE_WINDOW))
        start = min(earlier, key=lambda s: (abs(s - target), -s))
        value, past = trial.values[at], trial.values[start]
        # Steps are 0-based: step s has used s + 1 units of resource.
        if self.cfg.extrapolation == "log":
            span, ahead = math.log((at + 1) / (start + 1)), math.log((horizon + 1) / (at + 1))
        else:
            span, ahead = at - start, horizon - at
        slope = (value - past) / span  # per unit of (log-)resource
        if direction == Direction.MINIMIZE:
            bound = value + min(slope, 0.0) * ahead
        else:
            bound = value + max(slope, 0.0) * ahead
        refs = [
            c.values[last[c.number]]
            for c in others
            if last.get(c.number, -1) >= horizon and math.isfinite(c.values[last[c.number]])
        ]
        if not refs:
            return False
        best = min(refs) if direction == Direction.MINIMIZE else max(refs)
        return _worse(best, bound, direction)


class HyperbandConfig(_Config):
    min_resource: int = Field(1, ge=1)
    max_resource: int = Field(81, ge=1, description="Steps of a full trial.")
    reduction_factor: int = Field(3, ge=2)
    extrapolation: Extrapolation = Field("log", description="Each bracket's ASHA guard.")


class HyperbandStopper(Stopper):
    """Hyperband as brackets of ASHA with min_early_stopping_rate 0..s_max; trial ``n`` goes to
    bracket ``n mod n_brackets``, and only competes with trials of its bracket. Each bracket's
    ASHA has the learning-curve guard (``extrapolation``) and spares against its bracket."""

    name = "hyperband"

    def __init__(self, cfg: HyperbandConfig) -> None:
        self.cfg = cfg
        ratio = max(cfg.max_resource // cfg.min_resource, 1)
        self.n_brackets = int(math.floor(math.log(ratio, cfg.reduction_factor) + 1e-9)) + 1
        self.brackets = [
            AshaStopper(
                AshaConfig(
                    min_resource=cfg.min_resource,
                    reduction_factor=cfg.reduction_factor,
                    min_early_stopping_rate=s,
                    extrapolation=cfg.extrapolation,
                )
            )
            for s in range(self.n_brackets)
        ]

    def bracket_of(self, number: int) -> int:
        return number % self.n_brackets

    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        b = self.bracket_of(trial.number)
        mates = [c for c in others if self.bracket_of(c.number) == b]
        return self.brackets[b].should_stop(trial, mates, direction=direction)


register_stopper("asha", AshaConfig)(AshaStopper)
register_stopper("hyperband", HyperbandConfig)(HyperbandStopper)


# --- patience / threshold -------------------------------------------------------------------


class PatienceConfig(_Config):
    patience: int | None = Field(None, ge=1, description="Steps without improvement allowed.")
    min_delta: float = Field(0.0, ge=0)
    lower: float | None = Field(None, description="Stop when a value falls below this.")
    upper: float | None = Field(None, description="Stop when a value rises above this.")


class PatienceStopper(Stopper):
    name = "patience"

    def __init__(self, cfg: PatienceConfig) -> None:
        self.cfg = cfg

    def should_stop(self, trial: Curve, others: Sequence[Curve], *, direction: Direction) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.values[step]
        if math.isnan(value):
            return True
        if self.cfg.lower is not None and value < self.cfg.lower:
            return True
        if self.cfg.upper is not None and value > self.cfg.upper:
            return True
        if self.cfg.patience is None:
            return False
        steps = sorted(trial.values)
        sign = 1.0 if direction == Direction.MINIMIZE else -1.0
        best, best_step = math.inf, steps[0]
        for s in steps:
            v = sign * trial.values[s]
            if v < best - self.cfg.min_delta:
                best, best_step = v, s
        return step - best_step >= self.cfg.patience


register_stopper("patience", PatienceConfig)(PatienceStopper)
