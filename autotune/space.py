"""Search spaces: parameters, conditions, and the unit-cube encoding the designers work in.

A space is an ordered mapping of names to parameters::

    space = autotune.SearchSpace({
        "lr": autotune.Float(1e-3, 0.3, log=True),
        "depth": autotune.Int(2, 12),
        "kernel": autotune.Categorical(["linear", "rbf"]),
        "gamma": autotune.Float(1e-4, 1.0, log=True, condition={"kernel": ["rbf"]}),
    })

and the same space as JSON (the REST API's form)::

    {"lr": {"type": "float", "low": 0.001, "high": 0.3, "log": true}, ...,
     "gamma": {"type": "float", "low": 1e-4, "high": 1.0, "log": true,
               "condition": {"kernel": ["rbf"]}}}

Encoding. Every parameter maps to one coordinate of the unit interval. Continuous parameters map
linearly (in log space when ``log``). Discrete ones (integers, stepped floats, categoricals) cut the
interval into one bin per level, so a uniform point of the cube picks every level with equal
probability and any point decodes to a valid level: designers never produce off-grid values.
Conditional parameters are active only when their parent categorical takes one of the given
values; an inactive parameter is absent from the params dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic import ValidationError as PydanticValidationError

from autotune.errors import ValidationError

__all__ = [
    "Float",
    "Int",
    "Categorical",
    "Param",
    "Params",
    "SearchSpace",
    "MAX_PARAMS",
]

ChoiceValue = str | int | float | bool
Params = dict[str, ChoiceValue]
"""A configuration: the active parameters' names mapped to their values."""

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
MAX_PARAMS = 256  # more parameters than any tuning problem we know of; bounds request sizes
MAX_CHOICES = 1024
# Integers travel through float64 encodings and JSON: beyond 2**53 they would silently round.
MAX_INT_MAGNITUDE = 2**53
# A stepped float's grid must contain (high - low) / step levels up to this relative rounding error.
_STEP_RTOL = 1e-9


class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: dict[str, list[ChoiceValue]] | None = Field(
        default=None,
        description="Active only when the named parent categorical takes one of these values.",
    )

    @field_validator("condition")
    @classmethod
    def _one_parent(cls, v: dict[str, list[ChoiceValue]] | None) -> dict | None:
        if v is None:
            return v
        if len(v) != 1:
            raise ValueError("condition must name exactly one parent, e.g. {'kernel': ['rbf']}")
        (values,) = v.values()
        if not values:
            raise ValueError("condition must list at least one parent value")
        return v

    @property
    def parent(self) -> str | None:
        return next(iter(self.condition)) if self.condition else None

    @property
    def parent_values(self) -> list[ChoiceValue]:
        return next(iter(self.condition.values())) if self.condition else []

    # -- the interface every parameter implements --------------------------------------------
    @property
    def n_levels(self) -> int | None:
        """Number of distinct values, or None for a continuous parameter."""
        raise NotImplementedError

    def to_unit(self, value: Any) -> float:
        raise NotImplementedError

    def from_unit(self, u: float) -> ChoiceValue:
        raise NotImplementedError

    def check(self, name: str, value: Any) -> ChoiceValue:
        """Return the canonical value, or raise ValidationError naming ``name``."""
        raise NotImplementedError

    def _validate(self, name: str) -> None:
        """Checks that need the parameter's name in the message."""


def _bin(u: float, n: int) -> int:
    return min(max(int(math.floor(u * n)), 0), n - 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


class Float(_ParamBase):
    """A real parameter on ``[low, high]``, optionally on a log scale or a grid of ``step``."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __init__(self, low: float | None = None, high: float | None = None, /, **kw: Any) -> None:
        if low is not None:
            kw["low"] = low
        if high is not None:
            kw["high"] = high
        super().__init__(**kw)

    def _validate(self, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValidationError(
                f"parameter {name!r}: low and high must be finite numbers",
                field=f"space.{name}",
            )
        if self.low >= self.high:
            raise ValidationError(
                f"parameter {name!r}: low ({self.low}) must be less than high ({self.high})",
                field=f"space.{name}",
            )
        if self.log and self.low <= 0:
            raise ValidationError(
                f"parameter {name!r}: a log-scale parameter needs low > 0, got low={self.low}",
                field=f"space.{name}",
            )
        if self.step is not None:
            if self.log:
                raise ValidationError(
                    f"parameter {name!r}: step and log cannot be combined",
                    field=f"space.{name}",
                )
            if not (self.step > 0 and math.isfinite(self.step)):
                raise ValidationError(
                    f"parameter {name!r}: step must be a positive number, got {self.step}",
                    field=f"space.{name}",
                )
            k = (self.high - self.low) / self.step
            if abs(k - round(k)) > _STEP_RTOL * max(1.0, k):
                raise ValidationError(
                    f"parameter {name!r}: high - low ({self.high - self.low}) must be a whole "
                    f"multiple of step ({self.step})",
                    field=f"space.{name}",
                )

    @property
    def n_levels(self) -> int | None:
        if self.step is None:
            return None
        return int(round((self.high - self.low) / self.step)) + 1

    def to_unit(self, value: Any) -> float:
        x = float(value)
        if self.step is not None:
            n = self.n_levels
            assert n is not None
            i = int(round((x - self.low) / self.step))
            return (min(max(i, 0), n - 1) + 0.5) / n
        if self.log:
            return (math.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        if self.step is not None:
            n = self.n_levels
            assert n is not None
            # Round to the grid and to the step's own precision so 0.1 * 3 prints as 0.3.
            x = self.low + _bin(u, n) * self.step
            return float(min(max(round(x, 12), self.low), self.high))
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return float(min(max(x, self.low), self.high))

    def check(self, name: str, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValidationError(
                f"parameter {name!r} must be a finite number in [{self.low}, {self.high}], "
                f"got {value!r}",
                field=f"params.{name}",
            )
        x = float(value)
        if not (self.low <= x <= self.high):
            raise ValidationError(
                f"parameter {name!r} must lie in [{self.low}, {self.high}], got {x}",
                field=f"params.{name}",
            )
        if self.step is not None:
            k = (x - self.low) / self.step
            if abs(k - round(k)) > 1e-6:
                raise ValidationError(
                    f"parameter {name!r} must be low + k * step (low={self.low}, "
                    f"step={self.step}), got {x}",
                    field=f"params.{name}",
                )
        return x


class Int(_ParamBase):
    """An integer parameter on ``[low, high]`` (both included), on a log scale or with a step."""

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = 1

    def __init__(self, low: int | None = None, high: int | None = None, /, **kw: Any) -> None:
        if low is not None:
            kw["low"] = low
        if high is not None:
            kw["high"] = high
        super().__init__(**kw)

    def _validate(self, name: str) -> None:
        if max(abs(self.low), abs(self.high)) > MAX_INT_MAGNITUDE:
            raise ValidationError(
                f"parameter {name!r}: integer bounds must lie within +/-2**53 "
                f"({MAX_INT_MAGNITUDE}), the range a float64 encoding represents exactly",
                field=f"space.{name}",
            )
        if self.low >= self.high:
            raise ValidationError(
                f"parameter {name!r}: low ({self.low}) must be less than high ({self.high})",
                field=f"space.{name}",
            )
        if self.log and self.low <= 0:
            raise ValidationError(
                f"parameter {name!r}: a log-scale parameter needs low >= 1, got low={self.low}",
                field=f"space.{name}",
            )
        if self.step < 1:
            raise ValidationError(
                f"parameter {name!r}: step must be a positive integer, got {self.step}",
                field=f"space.{name}",
            )
        if self.log and self.step != 1:
            raise ValidationError(
                f"parameter {name!r}: step and log cannot be combined", field=f"space.{name}"
            )
        if (self.high - self.low) % self.step:
            raise ValidationError(
                f"parameter {name!r}: high - low ({self.high - self.low}) must be a multiple of "
                f"step ({self.step})",
                field=f"space.{name}",
            )

    @property
    def n_levels(self) -> int:
        return (self.high - self.low) // self.step + 1

    def to_unit(self, value: Any) -> float:
        x = int(value)
        if self.log:
            lo, hi = math.log(self.low - 0.5), math.log(self.high + 0.5)
            return (math.log(x) - lo) / (hi - lo)
        return (((x - self.low) // self.step) + 0.5) / self.n_levels

    def from_unit(self, u: float) -> int:
        if self.log:
            # Widen by half a unit at each end so every integer owns an interval of log space.
            lo, hi = math.log(self.low - 0.5), math.log(self.high + 0.5)
            u = min(max(float(u), 0.0), 1.0)
            return int(min(max(round(math.exp(lo + u * (hi - lo))), self.low), self.high))
        return self.low + _bin(u, self.n_levels) * self.step

    def check(self, name: str, value: Any) -> int:
        ok = _is_number(value) and math.isfinite(float(value)) and float(value) == int(value)
        if not ok:
            raise ValidationError(
                f"parameter {name!r} must be an integer in [{self.low}, {self.high}], "
                f"got {value!r}",
                field=f"params.{name}",
            )
        x = int(value)
        if not (self.low <= x <= self.high) or (x - self.low) % self.step:
            allowed = f"[{self.low}, {self.high}]" + (
                f" in steps of {self.step}" if self.step != 1 else ""
            )
            raise ValidationError(
                f"parameter {name!r} must be an integer in {allowed}, got {x}",
                field=f"params.{name}",
            )
        return x


class Categorical(_ParamBase):
    """One of a list of choices (str, int, float or bool); unordered."""

    type: Literal["categorical"] = "categorical"
    choices: list[ChoiceValue]

    def __init__(self, choices: Sequence[ChoiceValue] | None = None, /, **kw: Any) -> None:
        if choices is not None:
            kw["choices"] = list(choices)
        super().__init__(**kw)

    def _validate(self, name: str) -> None:
        if not self.choices:
            raise ValidationError(
                f"parameter {name!r}: choices must not be empty", field=f"space.{name}"
            )
        if len(self.choices) > MAX_CHOICES:
            raise ValidationError(
                f"parameter {name!r}: at most {MAX_CHOICES} choices, got {len(self.choices)}",
                field=f"space.{name}",
            )
        seen: set[tuple[str, Any]] = set()
        for c in self.choices:
            if isinstance(c, float) and not math.isfinite(c):
                raise ValidationError(
                    f"parameter {name!r}: choice {c!r} is not a finite number",
                    field=f"space.{name}",
                )
            key = _choice_key(c)
            if key in seen:
                raise ValidationError(
                    f"parameter {name!r}: duplicate choice {c!r}", field=f"space.{name}"
                )
            seen.add(key)

    @property
    def n_levels(self) -> int:
        return len(self.choices)

    def index(self, value: Any) -> int:
        key = _choice_key(value)
        for i, c in enumerate(self.choices):
            if _choice_key(c) == key:
                return i
        raise KeyError(value)

    def to_unit(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def from_unit(self, u: float) -> ChoiceValue:
        return self.choices[_bin(u, len(self.choices))]

    def check(self, name: str, value: Any) -> ChoiceValue:
        try:
            return self.choices[self.index(value)]
        except KeyError:
            raise ValidationError(
                f"parameter {name!r} must be one of {self.choices!r}, got {value!r}",
                field=f"params.{name}",
            ) from None


def _choice_key(value: Any) -> tuple[str, Any]:
    """Tell True from 1 and 1 from 1.0 is not needed, but bool from int is."""
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if _is_number(value):
        return ("num", float(value))
    return ("str", value)


Param = Annotated[Union[Float, Int, Categorical], Field(discriminator="type")]
_PARAM_ADAPTER: TypeAdapter[Float | Int | Categorical] = TypeAdapter(Param)


class SearchSpace(Mapping[str, "Float | Int | Categorical"]):
    """An ordered, validated mapping of parameter names to parameters.

    Args:
        params: name -> ``Float``/``Int``/``Categorical``, or their JSON dicts.

    Raises:
        ValidationError: naming the first bad parameter (bad name, bounds, choices, unknown or
            non-categorical parent, a parent value that is not one of its choices, or a cycle).
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        if isinstance(params, SearchSpace):
            params = params._params
        if not isinstance(params, Mapping):
            raise ValidationError(
                "space must be an object mapping parameter names to parameters", field="space"
            )
        if not params:
            raise ValidationError("space must have at least one parameter", field="space")
        if len(params) > MAX_PARAMS:
            raise ValidationError(
                f"space has {len(params)} parameters; at most {MAX_PARAMS} are allowed",
                field="space",
            )
        parsed: dict[str, Float | Int | Categorical] = {}
        for name, p in params.items():
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise ValidationError(
                    f"parameter name {name!r} is not allowed: use 1-64 letters, digits, '_', "
                    "'.' or '-', starting with a letter or '_'",
                    field=f"space.{name}",
                )
            if isinstance(p, (Float, Int, Categorical)):
                param = p
            else:
                try:
                    param = _PARAM_ADAPTER.validate_python(p)
                except PydanticValidationError as e:
                    raise ValidationError(
                        f"parameter {name!r}: {_pydantic_message(e)}",
                        field=f"space.{name}",
                        details={"errors": _pydantic_errors(e)},
                    ) from None
            param._validate(name)
            parsed[name] = param
        self._params = parsed
        self._order = self._topological_order()
        self._index = {name: i for i, name in enumerate(parsed)}

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Float | Int | Categorical:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(tuple(self._params))

    def __repr__(self) -> str:
        return f"SearchSpace({self._params!r})"

    # -- JSON ------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(data)

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {
            name: p.model_dump(exclude_none=True, exclude_defaults=False)
            for name, p in self._params.items()
        }

    # -- structure -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._params)

    @property
    def dim(self) -> int:
        return len(self._params)

    @property
    def is_conditional(self) -> bool:
        return any(p.condition for p in self._params.values())

    def index_of(self, name: str) -> int:
        return self._index[name]

    def _topological_order(self) -> list[str]:
        for name, p in self._params.items():
            parent = p.parent
            if parent is None:
                continue
            if parent not in self._params:
                raise ValidationError(
                    f"parameter {name!r}: condition names unknown parent {parent!r}",
                    field=f"space.{name}.condition",
                )
            pp = self._params[parent]
            if not isinstance(pp, Categorical):
                raise ValidationError(
                    f"parameter {name!r}: parent {parent!r} must be a categorical parameter",
                    field=f"space.{name}.condition",
                )
            for v in p.parent_values:
                try:
                    pp.index(v)
                except KeyError:
                    raise ValidationError(
                        f"parameter {name!r}: condition value {v!r} is not a choice of "
                        f"{parent!r} ({pp.choices!r})",
                        field=f"space.{name}.condition",
                    ) from None
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(n: str, path: list[str]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                cycle = " -> ".join(path[path.index(n) :] + [n])
                raise ValidationError(
                    f"parameter {n!r}: conditions form a cycle ({cycle})",
                    field=f"space.{n}.condition",
                )
            state[n] = 1
            parent = self._params[n].parent
            if parent is not None:
                visit(parent, path + [n])
            state[n] = 2
            order.append(n)

        for n in self._params:
            visit(n, [])
        return order

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the (partial) values of its ancestors."""
        p = self._params[name]
        if p.condition is None:
            return True
        parent = p.parent
        assert parent is not None
        if parent not in params or not self.is_active(parent, params):
            return False
        parent_param = self._params[parent]
        assert isinstance(parent_param, Categorical)
        keys = {_choice_key(v) for v in p.parent_values}
        return _choice_key(params[parent]) in keys

    # -- validation ------------------------------------------------------------------------
    def validate_params(self, params: Any, *, field: str = "params") -> Params:
        """Check a configuration against the space and return it in canonical form.

        Every active parameter must be present and valid; inactive ones must be absent (or
        None); unknown names are refused.
        """
        if not isinstance(params, Mapping):
            raise ValidationError(
                f"{field} must be an object mapping parameter names to values", field=field
            )
        unknown = [k for k in params if k not in self._params]
        if unknown:
            raise ValidationError(
                f"unknown parameter(s) {unknown!r}; the space has {self.names!r}",
                field=f"{field}.{unknown[0]}",
            )
        out: Params = {}
        for name in self._order:
            p = self._params[name]
            active = self.is_active(name, out)
            value = params.get(name)
            if not active:
                if value is not None:
                    raise ValidationError(
                        f"parameter {name!r} is inactive here: it is used only when "
                        f"{p.parent!r} is one of {p.parent_values!r}",
                        field=f"{field}.{name}",
                    )
                continue
            if value is None:
                raise ValidationError(
                    f"parameter {name!r} is missing", field=f"{field}.{name}"
                )
            try:
                out[name] = p.check(name, value)
            except ValidationError as e:
                raise ValidationError(e.message, field=f"{field}.{name}") from None
        return {name: out[name] for name in self._params if name in out}

    # -- the unit-cube encoding -------------------------------------------------------------
    def encode(self, params: Mapping[str, Any], *, inactive: float = 0.5) -> np.ndarray:
        """Map one configuration to a point of ``[0, 1]^dim``; inactive coordinates get ``inactive``."""
        x = np.full(self.dim, inactive, dtype=float)
        for i, (name, p) in enumerate(self._params.items()):
            if name in params and params[name] is not None:
                x[i] = p.to_unit(params[name])
        return x

    def encode_many(
        self, configs: Iterable[Mapping[str, Any]], *, inactive: float = 0.5
    ) -> np.ndarray:
        """(n_configs, dim) array of encodings."""
        rows = [self.encode(c, inactive=inactive) for c in configs]
        return np.vstack(rows) if rows else np.zeros((0, self.dim))

    def active_mask(self, params: Mapping[str, Any]) -> np.ndarray:
        """(dim,) boolean array: which coordinates are active in ``params``."""
        return np.array([name in params for name in self._params], dtype=bool)

    def decode(self, u: Sequence[float] | np.ndarray) -> Params:
        """Map a point of ``[0, 1]^dim`` to a valid configuration (conditions applied)."""
        u = np.asarray(u, dtype=float)
        if u.shape != (self.dim,):
            raise ValueError(f"expected a point of shape ({self.dim},), got {u.shape}")
        out: Params = {}
        for name in self._order:
            if self.is_active(name, out):
                out[name] = self._params[name].from_unit(float(u[self._index[name]]))
        return {name: out[name] for name in self._params if name in out}

    def round_trip(self, u: np.ndarray) -> np.ndarray:
        """Snap points of the cube to the encodings of the configurations they decode to."""
        return np.vstack([self.encode(self.decode(row)) for row in np.atleast_2d(u)])

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[Params]:
        """``n`` configurations drawn uniformly over the encoding."""
        return [self.decode(row) for row in rng.random((n, self.dim))]


def _pydantic_errors(e: PydanticValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in e.errors(include_url=False)
    ]


def _pydantic_message(e: PydanticValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
