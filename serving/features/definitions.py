"""Feature group definitions: the one description of features that training and serving share.

A :class:`FeatureGroupSpec` names its entity key column(s), its event-time column, its typed
features (with optional ranges and allowed values), a description, an owner and a TTL. Stored
definitions are :class:`FeatureGroup` (spec + version). Registering a spec under an existing name:

- identical schema, other metadata (description, owner, TTL, tags, a feature's description, a
  widened range or more allowed values): the latest version is updated in place;
- a breaking change (entities, event time, a feature removed, renamed or retyped, made
  non-nullable, a range narrowed, an allowed value dropped, a feature added that is not
  nullable): a new version, with its own (empty) history. Old versions keep serving.

Adding a nullable feature is not breaking: old rows read it as missing.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "FEATURE_GROUP_NAME_PATTERN",
    "FeatureDType",
    "EntityKey",
    "FeatureSpec",
    "FeatureGroupSpec",
    "FeatureGroup",
    "breaking_changes",
    "merged_in_place",
]

FEATURE_GROUP_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
# Column names: SQL-safe, within PostgreSQL's 63 bytes; a leading "_" is reserved for the
# store's own columns (``_event_time``).
_COLUMN_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"
FeatureDType = Literal["float", "int", "bool", "string"]


class EntityKey(BaseModel):
    """One entity key column: its name and its type (an integer id or a string)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=_COLUMN_PATTERN)
    dtype: Literal["int", "string"] = "int"


class FeatureSpec(BaseModel):
    """One typed feature. ``min``/``max`` are inclusive; ``allowed`` lists every valid value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=_COLUMN_PATTERN)
    dtype: FeatureDType = "float"
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[Any] | None = Field(default=None, min_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if (self.min is not None or self.max is not None) and self.dtype not in ("float", "int"):
            raise ValueError(f"feature {self.name!r}: min/max apply to float and int features")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"feature {self.name!r}: min/max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.allowed is not None:
            py = {"float": (int, float), "int": (int,), "bool": (bool,), "string": (str,)}
            bad = [
                v
                for v in self.allowed
                if not isinstance(v, py[self.dtype])
                or (self.dtype in ("int", "float") and isinstance(v, bool))
            ]
            if bad:
                raise ValueError(
                    f"feature {self.name!r}: allowed values {bad} are not of type {self.dtype}"
                )
        return self


class FeatureGroupSpec(BaseModel):
    """What a user registers.

    Args:
        name: the group's name (letters, digits, underscores).
        entities: the entity key column(s), e.g. ``[{"name": "customer_id", "dtype": "int"}]``.
        event_time: the column with each row's event time (UTC; naive times are taken as UTC).
        features: the typed features.
        ttl_s: how long a value stays valid after its event time (online reads and training
            sets treat an older value as missing); ``None``: forever.
        description, owner, tags: metadata.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=FEATURE_GROUP_NAME_PATTERN.pattern)
    entities: list[EntityKey] = Field(min_length=1, max_length=8)
    event_time: str = Field(default="event_time", pattern=_COLUMN_PATTERN)
    features: list[FeatureSpec] = Field(min_length=1, max_length=1000)
    ttl_s: float | None = Field(default=None, gt=0)
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("entities", mode="before")
    @classmethod
    def _entity_names(cls, v: Any) -> Any:
        # "customer_id" is short for {"name": "customer_id"} (an int key).
        if isinstance(v, str):
            v = [v]
        return [{"name": e} if isinstance(e, str) else e for e in v]

    @model_validator(mode="after")
    def _unique_columns(self) -> FeatureGroupSpec:
        cols = [e.name for e in self.entities] + [self.event_time] + [f.name for f in self.features]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(
                f"column name(s) {dup} are used twice among entities, event_time and features"
            )
        return self

    @property
    def entity_names(self) -> list[str]:
        return [e.name for e in self.entities]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec | None:
        return next((f for f in self.features if f.name == name), None)


class FeatureGroup(FeatureGroupSpec):
    """A stored definition: the spec with its version and times (features in storage order)."""

    version: int = Field(ge=1)
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def spec(self) -> FeatureGroupSpec:
        return FeatureGroupSpec.model_validate(
            self.model_dump(exclude={"version", "created_at", "updated_at"})
        )


def _narrowed(old: FeatureSpec, new: FeatureSpec) -> list[str]:
    out = []
    if new.min is not None and (old.min is None or new.min > old.min):
        out.append(f"feature {new.name!r}: min raised to {new.min}")
    if new.max is not None and (old.max is None or new.max < old.max):
        out.append(f"feature {new.name!r}: max lowered to {new.max}")
    if new.allowed is not None:
        dropped = [v for v in (old.allowed or []) if v not in new.allowed]
        if old.allowed is None or dropped:
            out.append(f"feature {new.name!r}: allowed values narrowed")
    if old.nullable and not new.nullable:
        out.append(f"feature {new.name!r}: no longer nullable")
    return out


def breaking_changes(old: FeatureGroupSpec, new: FeatureGroupSpec) -> list[str]:
    """Why ``new`` cannot update ``old`` in place (empty: it can). See the module docstring."""
    out = []
    if old.entities != new.entities:
        out.append("entity keys changed")
    if old.event_time != new.event_time:
        out.append("event_time column changed")
    new_by_name = {f.name: f for f in new.features}
    for f in old.features:
        g = new_by_name.get(f.name)
        if g is None:
            out.append(f"feature {f.name!r} removed")
        elif g.dtype != f.dtype:
            out.append(f"feature {f.name!r}: dtype {f.dtype} -> {g.dtype}")
        else:
            out.extend(_narrowed(f, g))
    old_names = set(old.feature_names)
    for g in new.features:
        if g.name not in old_names and not g.nullable:
            out.append(f"feature {g.name!r} added as non-nullable")
    return out


def merged_in_place(old: FeatureGroupSpec, new: FeatureGroupSpec) -> list[FeatureSpec]:
    """``new``'s features in storage order: ``old``'s order first, added features after (rows
    are stored as arrays in that order, so an in-place update never moves a column)."""
    by_name = {f.name: f for f in new.features}
    kept = [by_name[n] for n in old.feature_names]
    return kept + [f for f in new.features if f.name not in set(old.feature_names)]
