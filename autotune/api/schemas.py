"""Request and response bodies that are the API's own (the domain models live in
:mod:`autotune.models` and :mod:`autotune.service` and are served as they are)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from autotune.models import Trial

__all__ = [
    "SuggestRequest",
    "ObserveRequest",
    "ReportRequest",
    "FailRequest",
    "EnqueueRequest",
    "BestTrials",
    "Deleted",
    "Health",
    "MAX_SUGGEST",
]

MAX_SUGGEST = 1000  # one request's trials; more would be one huge transaction


def _no_nul(v: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here as bad input rather than fail on insert.
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Text = Annotated[str, AfterValidator(_no_nul)]


class SuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=MAX_SUGGEST, description="How many trials.")
    client_id: Text | None = Field(
        default=None,
        description="Makes the request idempotent: while this client has running trials, "
        "asking again returns them instead of new ones.",
    )


class ObserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, float] = Field(description='Metric name -> value, e.g. {"loss": 0.12}.')
    metadata: dict[str, Any] | None = Field(default=None, description="Stored with the trial.")


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, description="Training step or epoch.")
    value: float = Field(description="Intermediate value of the (first) objective.")


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(
        default="", description="Why the trial failed; the service keeps the first 10,000 chars."
    )


class EnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(description="A configuration to evaluate before the others.")


class BestTrials(BaseModel):
    """The best trial (one objective) or the Pareto-optimal trials (several)."""

    trials: list[Trial]


class Deleted(BaseModel):
    name: str
    deleted: bool = True


class Health(BaseModel):
    status: str = "ok"
    version: str
    database: str = "ok"
