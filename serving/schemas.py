"""The registry's domain model (pydantic), used by the registry, the server, the REST API and CLI.

A :class:`ModelVersion` is immutable once registered: its artifact (by sha256), parameters,
metrics, lineage, input :class:`Signature` and :class:`OutputSchema`. Aliases are the only thing
that moves, and every move is an :class:`AliasEvent`.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.errors import InvalidInputError

__all__ = [
    "MODEL_NAME_PATTERN",
    "ALIAS_PATTERN",
    "FeatureType",
    "Feature",
    "Signature",
    "OutputSchema",
    "Lineage",
    "ArtifactRef",
    "ModelVersion",
    "AliasEvent",
    "Comparison",
    "ModelSummary",
    "ModelDetail",
    "PromotionResult",
]

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
# An alias is never all digits, so "/versions/3" always means version 3, never an alias "3".
ALIAS_PATTERN = re.compile(r"^(?![0-9]+$)[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
# Invalid-input errors list at most this many offending cells; the count says how many more.
MAX_REPORTED_TYPE_ERRORS = 20
# Request limits (the tuning API's live in autotune/api/limits.py; these are the same bounds).
MAX_FEATURES = 10_000  # inputs of one signature
MAX_CLASSES = 10_000  # class labels of a classifier
MAX_TEXT = 256  # a short string: a name, a dataset, a version label
MAX_DESCRIPTION = 10_000
MAX_LINEAGE_EXTRA = 64  # lineage fields beyond the named ones

FeatureType = Literal["float", "int", "bool"]
_FLOATISH = {float, int}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "bool": (bool,),
}


class Feature(BaseModel):
    """One input feature: its name, its JSON type, and whether null (missing) is allowed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1, max_length=256)
    type: FeatureType = "float"
    nullable: bool = Field(default=False, description="null is sent to the model as NaN.")


class Signature(BaseModel):
    """The ordered input features of a model; the order is the model's column order."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inputs: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES)

    @field_validator("inputs")
    @classmethod
    def _unique(cls, v: list[Feature]) -> list[Feature]:
        seen: set[str] = set()
        dup = [f.name for f in v if f.name in seen or seen.add(f.name)]  # type: ignore[func-returns-value]
        if dup:
            raise ValueError(f"duplicate feature name(s) {sorted(set(dup))}")
        return v

    @classmethod
    def from_names(cls, names: Sequence[str], type: FeatureType = "float") -> Signature:
        return cls(inputs=[Feature(name=n, type=type) for n in names])

    @cached_property
    def names(self) -> list[str]:
        return [f.name for f in self.inputs]

    def to_matrix(self, rows: Any, *, field: str = "rows") -> np.ndarray:
        """Check ``rows`` (a list of {feature: value}) and return them as a (n_rows, n_features)
        float32 matrix in signature order.

        Raises:
            InvalidInputError: naming every missing, extra and wrongly typed feature.
        """
        if not isinstance(rows, list) or not rows:
            raise InvalidInputError(
                f"{field} must be a non-empty list of objects {{feature: value}}", field=field
            )
        if self._numeric and type(rows) is list and rows:
            fast = self._fast_matrix(rows)
            if fast is not None:
                return fast
        names = self.names
        expected = set(names)
        missing: set[str] = set()
        extra: set[str] = set()
        wrong: list[dict[str, Any]] = []
        n_wrong = 0
        out = np.empty((len(rows), len(names)), dtype=np.float32)  # (n_rows, n_features)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInputError(
                    f"{field}[{i}] must be an object {{feature: value}}, got {type(row).__name__}",
                    field=f"{field}.{i}",
                )
            if len(row) != len(names) or row.keys() != expected:
                missing.update(expected - row.keys())
                extra.update(row.keys() - expected)
            values = out[i]
            for j, f in enumerate(self.inputs):
                v = row.get(f.name, _ABSENT)
                if v is _ABSENT:
                    values[j] = math.nan
                    continue
                t = type(v)
                if t in _PY_TYPES[f.type]:
                    values[j] = v
                elif v is None and f.nullable:
                    values[j] = math.nan
                else:
                    n_wrong += 1
                    if len(wrong) < MAX_REPORTED_TYPE_ERRORS:
                        wrong.append(
                            {"row": i, "feature": f.name, "expected": f.type, "got": _json_type(v)}
                        )
        if missing or extra or wrong:
            raise _input_error(field, sorted(missing), sorted(extra), wrong, n_wrong)
        return out

    @cached_property
    def _numeric(self) -> bool:
        # Every feature a non-nullable float: the common case, checked in bulk.
        return all(f.type == "float" and not f.nullable for f in self.inputs)

    @cached_property
    def _getter(self) -> Any:
        return operator.itemgetter(*self.names)

    def _fast_matrix(self, rows: list[Any]) -> np.ndarray | None:
        """The matrix when every row is exactly right, else None (the slow path explains)."""
        n = len(self.inputs)
        try:
            if any(len(row) != n for row in rows):
                return None
            values = list(map(self._getter, rows))  # C loops: this is the hot path
        except (KeyError, TypeError):
            return None
        if n == 1:
            values = [(v,) for v in values]
        if not set(map(type, itertools.chain.from_iterable(values))) <= _FLOATISH:
            return None
        flat = itertools.chain.from_iterable(values)
        return np.fromiter(flat, dtype=np.float32, count=len(values) * n).reshape(len(values), n)

    def columns_to_matrix(self, columns: Mapping[str, Any], *, field: str = "inputs") -> np.ndarray:
        """Like :meth:`to_matrix` for column-major input ({feature: [v0, v1, ...]})."""
        names = self.names
        missing = sorted(set(names) - columns.keys())
        extra = sorted(columns.keys() - set(names))
        if missing or extra:
            raise _input_error(field, missing, extra, [], 0)
        lengths = {len(c) if isinstance(c, list) else -1 for c in columns.values()}
        if len(lengths) != 1 or -1 in lengths or 0 in lengths:
            raise InvalidInputError(
                f"every input of {field} must be a non-empty list, all of the same length",
                field=field,
            )
        n = lengths.pop()
        rows = [{k: columns[k][i] for k in names} for i in range(n)]
        return self.to_matrix(rows, field=field)


class _Absent:
    pass


_ABSENT = _Absent()


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "array"}.get(
        type(v), "object"
    )


def _input_error(
    field: str, missing: list[str], extra: list[str], wrong: list[dict[str, Any]], n_wrong: int
) -> InvalidInputError:
    parts = []
    if missing:
        parts.append(f"missing feature(s) {missing}")
    if extra:
        parts.append(f"unexpected feature(s) {extra}")
    if wrong:
        shown = ", ".join(
            f"{w['feature']!r} in row {w['row']} is {w['got']}, expected {w['expected']}"
            for w in wrong[:5]
        )
        more = f" and {n_wrong - 5} more" if n_wrong > 5 else ""
        parts.append(f"wrong type: {shown}{more}")
    return InvalidInputError(
        f"{field} do not match the model's signature: " + "; ".join(parts),
        field=field,
        details={
            "missing": missing,
            "extra": extra,
            "wrong_type": wrong,
            "wrong_type_count": n_wrong,
        },
    )


class OutputSchema(BaseModel):
    """What the model returns: one output tensor (Open Inference Protocol terms)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(default="prediction", min_length=1, max_length=MAX_TEXT)
    datatype: Literal["FP32", "FP64", "INT64"] = "FP32"
    task: Literal["regression", "classification"] | None = None
    classes: list[Any] | None = Field(
        default=None,
        max_length=MAX_CLASSES,
        description="Class labels, in the order of the probability columns.",
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)


class Lineage(BaseModel):
    """Where a model version came from. Serving records it; it does not interpret it."""

    model_config = ConfigDict(frozen=True, extra="allow")
    study: str | None = Field(default=None, max_length=MAX_TEXT)
    trial: int | None = Field(default=None, ge=0, le=2**63 - 1)
    dataset: str | None = Field(default=None, max_length=MAX_TEXT)
    dataset_version: str | None = Field(default=None, max_length=MAX_TEXT)
    feature_set: str | None = Field(default=None, max_length=MAX_TEXT)
    feature_set_version: str | None = Field(default=None, max_length=MAX_TEXT)
    code_version: str | None = Field(
        default=None, max_length=MAX_TEXT, description="git sha of the training code."
    )

    @model_validator(mode="after")
    def _bounded_extra(self) -> Lineage:
        extra = self.__pydantic_extra__ or {}
        if len(extra) > MAX_LINEAGE_EXTRA:
            raise ValueError(
                f"lineage has {len(extra)} extra fields; at most {MAX_LINEAGE_EXTRA} are allowed"
            )
        long = [k for k in extra if len(k) > MAX_TEXT]
        if long:
            raise ValueError(f"lineage field names are at most {MAX_TEXT} characters")
        return self


class ArtifactRef(BaseModel):
    """A stored artifact: its content hash, format and size."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    format: str
    size: int


class ModelVersion(BaseModel):
    """One immutable version of a model."""

    model_config = ConfigDict(frozen=True)
    name: str
    version: int
    artifact: ArtifactRef
    signature: Signature
    output_schema: OutputSchema = OutputSchema()
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Lineage()
    input_example: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None
    created_by: str | None = None
    created_at: datetime
    aliases: list[str] = Field(default_factory=list, description="Aliases on it when read.")


class AliasEvent(BaseModel):
    """One alias move, append-only: ``to_version=None`` means the alias was removed."""

    model_config = ConfigDict(frozen=True)
    id: int
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str | None
    reason: str | None
    created_at: datetime


class Comparison(BaseModel):
    """A stored decision of :meth:`ModelRegistry.promote_if_better`."""

    model_config = ConfigDict(frozen=True)
    id: int
    name: str
    alias: str
    candidate_version: int
    incumbent_version: int | None
    metric: str
    direction: Literal["minimize", "maximize"]
    candidate_value: float
    incumbent_value: float | None
    promoted: bool
    reason: str
    actor: str | None
    created_at: datetime


class ModelSummary(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    description: str | None = None
    versions: list[int]
    aliases: dict[str, int]
    latest_version: int | None
    created_at: datetime


class ModelDetail(ModelSummary):
    """A model with its versions, alias history and promotion decisions (newest first)."""

    model_versions: list[ModelVersion] = Field(default_factory=list)
    history: list[AliasEvent] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)


class PromotionResult(BaseModel):
    """What ``promote_if_better`` decided, and the alias move it made (if any)."""

    model_config = ConfigDict(frozen=True)
    promoted: bool
    comparison: Comparison
    event: AliasEvent | None = None
