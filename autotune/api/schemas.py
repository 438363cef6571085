"""Request and response bodies that are the API's own (the domain models live in
:mod:`autotune.models` and :mod:`autotune.service` and are served as they are)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from autotune.api.limits import MAX_CLIENT_ID, MAX_KEY, MAX_METRICS, MAX_PARAMS, MAX_SUGGEST
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


def _no_nul(v: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here as bad input rather than fail on insert.
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Text = Annotated[str, AfterValidator(_no_nul)]
ClientId = Annotated[str, StringConstraints(max_length=MAX_CLIENT_ID), AfterValidator(_no_nul)]
# A key of a mapping the user names (metric, parameter).
Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY), AfterValidator(_no_nul)]


class SuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=MAX_SUGGEST, description="How many trials.")
    client_id: ClientId | None = Field(
        default=None,
        description="Makes the request idempotent: while this client has running trials, "
        "asking again returns them instead of new ones.",
    )


class ObserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[Key, float] = Field(
        max_length=MAX_METRICS, description='Metric name -> value, e.g. {"loss": 0.12}.'
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Stored with the trial; at most 64 KiB as JSON (422 beyond).",
    )


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

    params: dict[Key, Any] = Field(
        max_length=MAX_PARAMS, description="A configuration to evaluate before the others."
    )


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
