"""The domain model of the tuning core, defined once and used by the service, API and client.

``StudySpec`` is what a user asks for (validated once, here); ``Study`` and ``Trial`` are what
the service returns. Storage rows map to these; the REST API serializes them as they are.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autotune.errors import ValidationError
from autotune.space import NAME_PATTERN, Params, SearchSpace

__all__ = [
    "Direction",
    "TrialState",
    "StudyState",
    "Constraint",
    "StudySpec",
    "Study",
    "Trial",
    "Measurement",
    "FINISHED_STATES",
    "MAX_STUDY_NAME",
    "MAX_METADATA_BYTES",
    "DEFAULT_HEARTBEAT_GRACE_S",
]

MAX_STUDY_NAME = 128
MAX_METADATA_BYTES = 64 * 1024
MAX_OBJECTIVES = 16
MAX_CONSTRAINTS = 32
# Running trials that have not sent a heartbeat (or been created) for this long are abandoned
# and their configurations requeued. Long trials send heartbeats (the client and runner do).
DEFAULT_HEARTBEAT_GRACE_S = 600.0
STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class TrialState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"
    ABANDONED = "abandoned"


FINISHED_STATES = frozenset({TrialState.COMPLETED, TrialState.FAILED, TrialState.PRUNED})


class StudyState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


ConstraintOp = Literal["<=", ">="]


class Constraint(BaseModel):
    """An outcome constraint ``metric op bound``: a trial is feasible when every one holds."""

    model_config = ConfigDict(frozen=True)
    op: ConstraintOp
    bound: float

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound


class StudySpec(BaseModel):
    """What a user submits to create a study. Validation happens here, once."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique study name: letters, digits, '_', '.', '-'.")
    space: dict[str, Any] = Field(description="Parameter name -> parameter definition.")
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {"value": Direction.MINIMIZE},
        description='Metric name -> "minimize" | "maximize"; several for multi-objective.',
    )
    constraints: dict[str, tuple[ConstraintOp, float]] = Field(
        default_factory=dict,
        description='Outcome constraints, metric -> ["<=" | ">=", bound].',
    )
    max_trials: int | None = Field(default=None, ge=1, le=10_000_000)
    algorithm: str = Field(default="auto", description='"auto", "random", "sobol", ...')
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    heartbeat_grace_s: float | None = Field(
        default=DEFAULT_HEARTBEAT_GRACE_S,
        gt=0,
        description="Running trials silent for longer are abandoned and requeued; null disables.",
    )
    stopper: dict[str, Any] | None = Field(
        default=None, description='Early-stopping rule, e.g. {"type": "median"}.'
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STUDY_NAME_PATTERN.match(v):
            raise ValueError(
                f"study name {v!r} is not allowed: use 1-{MAX_STUDY_NAME} letters, digits, "
                "'_', '.' or '-', not starting with '.' or '-'"
            )
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: dict[str, Direction]) -> dict[str, Direction]:
        if not v:
            raise ValueError("at least one objective is required, e.g. {'loss': 'minimize'}")
        if len(v) > MAX_OBJECTIVES:
            raise ValueError(f"at most {MAX_OBJECTIVES} objectives")
        for k in v:
            if not NAME_PATTERN.match(k):
                raise ValueError(f"metric name {k!r} is not allowed")
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: dict[str, tuple[str, float]]) -> dict[str, tuple[str, float]]:
        if len(v) > MAX_CONSTRAINTS:
            raise ValueError(f"at most {MAX_CONSTRAINTS} constraints")
        for k, (_, bound) in v.items():
            if not NAME_PATTERN.match(k):
                raise ValueError(f"metric name {k!r} is not allowed")
            if not math.isfinite(bound):
                raise ValueError(f"constraint bound of {k!r} must be a finite number")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        # A field validator, so that the error names "metadata" rather than the whole body.
        import json

        if len(json.dumps(v, default=str)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must serialize to at most {MAX_METADATA_BYTES} bytes")
        return v

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        both = set(self.objectives) & set(self.constraints)
        if both:
            raise ValueError(f"metric(s) {sorted(both)} cannot be both objective and constraint")
        return self

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)

    def constraint_objects(self) -> dict[str, Constraint]:
        return {k: Constraint(op=op, bound=b) for k, (op, b) in self.constraints.items()}

    @classmethod
    def parse(cls, data: Any) -> StudySpec:
        """Validate user input into a spec, raising autotune's ValidationError on any problem."""
        from pydantic import ValidationError as PVE

        from autotune.space import _pydantic_errors

        if isinstance(data, StudySpec):
            spec = data
        else:
            if isinstance(data, dict) and isinstance(data.get("space"), SearchSpace):
                data = {**data, "space": data["space"].to_json()}
            try:
                spec = cls.model_validate(data)
            except PVE as e:
                errs = _pydantic_errors(e)
                first = errs[0]
                field = ".".join(first["loc"]) or "body"
                raise ValidationError(
                    f"{field}: {first['msg']}", field=field, details={"errors": errs}
                ) from None
        spec.search_space()  # raises ValidationError naming the parameter
        return spec


class Study(BaseModel):
    """A study as stored: its spec plus state and counters."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    space: dict[str, Any]
    objectives: dict[str, Direction]
    constraints: dict[str, tuple[ConstraintOp, float]] = Field(default_factory=dict)
    max_trials: int | None = None
    algorithm: str = "auto"
    seed: int
    heartbeat_grace_s: float | None = DEFAULT_HEARTBEAT_GRACE_S
    stopper: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    state: StudyState = StudyState.ACTIVE
    n_trials: int = 0
    designer_info: dict[str, Any] = Field(
        default_factory=dict, description="Which designer 'auto' chose, and why."
    )
    created_at: datetime
    updated_at: datetime

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def constraint_objects(self) -> dict[str, Constraint]:
        return {k: Constraint(op=op, bound=b) for k, (op, b) in self.constraints.items()}


class Measurement(BaseModel):
    """An intermediate value reported at a step."""

    step: int
    value: float


class Trial(BaseModel):
    """One evaluated (or running) configuration of a study."""

    model_config = ConfigDict(frozen=True)

    number: int
    state: TrialState
    params: Params
    values: dict[str, float] | None = None
    intermediate: list[Measurement] = Field(default_factory=list)
    client_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    completed_at: datetime | None = None
    heartbeat_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def is_feasible(self, constraints: dict[str, Constraint]) -> bool:
        if self.values is None:
            return False
        return all(
            name in self.values and c.satisfied(self.values[name])
            for name, c in constraints.items()
        )
