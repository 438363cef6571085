"""What the feature store answers with, and feature references (``group[@version][:feature]``).

These models are shared by the store, the REST API, the Python client and the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.features.definitions import FEATURE_GROUP_NAME_PATTERN, FeatureGroup
from serving.features.errors import FeatureSchemaError

__all__ = [
    "ApplyResult",
    "IngestResult",
    "OnlineRow",
    "TrainingSetSpec",
    "TrainingSet",
    "FeatureRef",
    "parse_refs",
    "TRAINING_SET_NAME_PATTERN",
]

# Request limits: feature references of one training set, a column name, a description.
MAX_REFS = 10_000
MAX_COLUMN = 256
MAX_DESCRIPTION = 10_000
TRAINING_SET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_REF = re.compile(
    r"^(?P<group>[A-Za-z][A-Za-z0-9_]{0,127})(?:@(?P<version>[0-9]{1,9}))?"
    r"(?::(?P<feature>\*|[A-Za-z][A-Za-z0-9_]{0,62}))?$"
)


class ApplyResult(BaseModel):
    """What registering a definition did: ``created`` (version 1), ``new_version`` (a breaking
    change; ``reasons`` say which), ``updated`` (metadata or added nullable features, in place)
    or ``unchanged``."""

    action: Literal["created", "new_version", "updated", "unchanged"]
    group: FeatureGroup
    reasons: list[str] = Field(default_factory=list)


class IngestResult(BaseModel):
    """The outcome of one ingested batch. Accepted rows were committed in one transaction."""

    group: str
    version: int
    received: int
    accepted: int
    rejected: int
    duplicates_in_batch: int = Field(
        0, description="Rows repeating an (entity, event time) of the batch; the last one won."
    )
    rejections: list[dict[str, Any]] = Field(
        default_factory=list, description="{row, reasons} of the first rejected rows."
    )


class OnlineRow(BaseModel):
    """The online values of one entity. ``missing``: never ingested; ``expired``: its latest
    value is older than the TTL (its features are null, as for missing)."""

    model_config = ConfigDict(frozen=True)
    entity: dict[str, Any]
    status: Literal["present", "missing", "expired"]
    event_time: datetime | None = None
    features: dict[str, Any]


class TrainingSetSpec(BaseModel):
    """A training set: a label table joined point-in-time with features.

    Args:
        name: the training set's name.
        features: feature references, ``group``, ``group:feature``, ``group@2:feature``,
            ``group:*``; unversioned references are pinned to the latest version at creation.
        timestamp: the label table's time column (the prediction time of each row).
        label: the label column (optional; recorded for datasets).
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TRAINING_SET_NAME_PATTERN.pattern)
    features: list[str] = Field(min_length=1, max_length=MAX_REFS)
    timestamp: str = Field(default="timestamp", min_length=1, max_length=MAX_COLUMN)
    label: str | None = Field(default=None, max_length=MAX_COLUMN)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)


class TrainingSet(BaseModel):
    """A stored training set: its spec with pinned feature references and its label table's
    size and hash. Materializing it joins the stored labels with the offline store again."""

    name: str
    version: int
    features: list[str]
    columns: list[str] = Field(description="The feature columns it adds, in order.")
    timestamp: str
    label: str | None
    description: str = ""
    n_rows: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class FeatureRef:
    """``group[@version][:feature]``; ``feature=None`` means every feature of the group."""

    group: str
    version: int | None
    feature: str | None

    def __str__(self) -> str:
        v = f"@{self.version}" if self.version is not None else ""
        return f"{self.group}{v}:{self.feature or '*'}"


def parse_refs(refs: list[str] | str) -> list[FeatureRef]:
    """Parse feature references (a list, or one comma-separated string)."""
    items = [r.strip() for r in refs.split(",")] if isinstance(refs, str) else list(refs)
    out = []
    for r in items:
        m = _REF.match(r) if isinstance(r, str) else None
        if m is None:
            raise FeatureSchemaError(
                f"feature reference {r!r} is not valid: write group, group:feature, "
                "group@2:feature or group:*",
                field="features",
            )
        feat = m["feature"]
        out.append(
            FeatureRef(
                m["group"],
                int(m["version"]) if m["version"] else None,
                None if feat in (None, "*") else feat,
            )
        )
    if not out:
        raise FeatureSchemaError("no feature references given", field="features")
    assert all(FEATURE_GROUP_NAME_PATTERN.match(r.group) for r in out)
    return out
