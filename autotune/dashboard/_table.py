"""The trial table of the dashboard: rows from a snapshot, filtered, sorted and paged on the
server so a 10,000-trial study sends the browser one page.

Filter syntax (``q``): whitespace-separated terms, all of which must hold. ``name op value`` with
``op`` one of ``= != < <= > >=`` compares a field: ``number``, ``state``, ``client_id``,
``duration`` (seconds), a metric or a parameter (``values.loss`` / ``params.lr`` when a name is
both); a term without an operator matches rows whose parameters, client id, state or error
contain it.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from autotune.errors import ValidationError
from autotune.models import Study, Trial

__all__ = ["trial_row", "table_page", "MAX_ERROR_PREVIEW"]

MAX_ERROR_PREVIEW = 200
_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*)(<=|>=|!=|=|<|>)(.*)$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_PLAIN_FIELDS = ("number", "state", "client_id", "duration", "created_at", "completed_at")


def trial_row(t: Trial) -> dict[str, Any]:
    """One table row: what the table shows of a trial (no learning curve, error shortened)."""
    duration = (
        (t.completed_at - t.created_at).total_seconds()
        if t.completed_at is not None and t.created_at is not None
        else None
    )
    error = t.error
    if error is not None and len(error) > MAX_ERROR_PREVIEW:
        error = error[:MAX_ERROR_PREVIEW] + "…"
    return {
        "number": t.number,
        "state": t.state.value,
        "values": t.values or {},
        "params": t.params,
        "client_id": t.client_id,
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "completed_at": t.completed_at.isoformat() if t.completed_at else None,
        "duration": duration,
        "n_steps": len(t.intermediate),
        "error": error,
    }


def _getter(study: Study, field: str, *, param: str = "q") -> Callable[[dict[str, Any]], Any]:
    """How to read ``field`` from a row; raises naming the fields there are."""
    if field in _PLAIN_FIELDS:
        return lambda r: r[field]
    metrics = [*study.objectives, *study.constraints]
    if field.startswith("values."):
        name = field[len("values.") :]
        if name in metrics:
            return lambda r: r["values"].get(name)
    elif field.startswith("params."):
        name = field[len("params.") :]
        if name in study.space:
            return lambda r: r["params"].get(name)
    elif field in metrics:
        return lambda r: r["values"].get(field)
    elif field in study.space:
        return lambda r: r["params"].get(field)
    allowed = [*_PLAIN_FIELDS, *metrics, *study.space]
    raise ValidationError(
        f"unknown field {field!r}; the table's fields are {allowed}",
        field=param,
        details={"allowed": allowed},
    )


def _coerce(text: str, sample: Any) -> Any:
    """The filter's value as the type of the field's values."""
    if isinstance(sample, bool):
        return text.lower() in ("true", "1", "yes")
    if isinstance(sample, int | float):
        try:
            return float(text)
        except ValueError:
            raise ValidationError(f"{text!r} is not a number", field="q") from None
    return text


def _term_filter(study: Study, term: str) -> Callable[[dict[str, Any]], bool]:
    m = _TERM.match(term)
    if m is None:
        needle = term.lower()

        def contains(r: dict[str, Any]) -> bool:
            hay = r.get("_text")
            if hay is None:
                hay = r["_text"] = " ".join(
                    [json.dumps(r["params"]), r["client_id"] or "", r["state"], r["error"] or ""]
                ).lower()
            return needle in hay

        return contains
    field, op, raw = m.groups()
    get = _getter(study, field)
    compare = _OPS[op]

    def check(r: dict[str, Any]) -> bool:
        v = get(r)
        if v is None:
            return op == "!="
        try:
            return bool(compare(v, _coerce(raw, v)))
        except TypeError:  # e.g. "<" between a string and a number: not a match
            return False

    return check


def _sort_key(get: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def key(r: dict[str, Any]) -> tuple[int, Any]:
        v = get(r)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (1, 0)
        if isinstance(v, bool | int | float):
            return (0, (0, float(v), ""))
        return (0, (1, 0.0, str(v)))

    return key


def table_page(
    study: Study,
    rows: Sequence[dict[str, Any]],
    *,
    q: str = "",
    state: str | None = None,
    sort: str = "number",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows and how many rows pass the filter.

    Rows without the sort field come last in either order.

    Raises:
        ValidationError: an unknown field in ``q`` or ``sort``, or a non-numeric comparison.
    """
    checks = [_term_filter(study, t) for t in q.split()]
    if state:
        checks.append(lambda r: r["state"] == state)
    kept = [r for r in rows if all(c(r) for c in checks)] if checks else list(rows)
    if sort != "number" or descending:
        key = _sort_key(_getter(study, sort, param="sort"))
        present = [r for r in kept if key(r)[0] == 0]
        missing = [r for r in kept if key(r)[0] == 1]
        present.sort(key=key, reverse=descending)
        kept = present + missing
    page = [{k: v for k, v in r.items() if k != "_text"} for r in kept[offset : offset + limit]]
    return page, len(kept)
