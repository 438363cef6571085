"""Validation of an ingested batch against its group's definition, vectorized with pandas.

A batch that does not fit as a whole (a missing key, event-time or non-nullable feature column,
an unknown column) raises :class:`FeatureSchemaError` and nothing is stored. Otherwise every row
is checked (types, nulls, ranges, allowed values, entity keys, event times); rejected rows come
back with their reasons and the accepted rows go on, converted to native values. Rows repeating
an (entity, event time) within the batch keep the last one, as a re-ingest would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.features.definitions import FeatureGroup, FeatureSpec
from serving.features.errors import FeatureSchemaError
from serving.features.tables import MAX_STRING_KEY

__all__ = ["ValidatedBatch", "validate_frame", "to_frame", "to_epoch_us", "MAX_REPORTED_REJECTIONS"]

# Rejected rows reported with their reasons; the count covers them all.
MAX_REPORTED_REJECTIONS = 1000
# Shown values are cut to this many characters in a reason.
_MAX_SHOWN = 60
_BOOL_WORDS = {
    True: True, False: False,  # also 1 and 0, which hash like True and False
    "true": True, "false": False, "True": True, "False": False, "TRUE": True, "FALSE": False,
    "1": True, "0": False,
}  # fmt: skip


@dataclass
class ValidatedBatch:
    """The accepted rows as native columns, and what was rejected.

    ``keys`` and ``features`` hold numpy arrays (``object`` with ``None`` for a null feature);
    ``event_time`` is int64 microseconds since the epoch (UTC).
    """

    keys: dict[str, np.ndarray]
    event_time: np.ndarray
    features: dict[str, np.ndarray]
    n_received: int
    n_rejected: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    n_duplicates: int = 0

    @property
    def n_accepted(self) -> int:
        return int(self.event_time.shape[0])


def to_frame(data: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a pyarrow Table, a list of row dicts or a dict of columns."""
    if isinstance(data, pd.DataFrame):
        return data
    if type(data).__module__.startswith("pyarrow"):
        return data.to_pandas()
    if isinstance(data, list):
        if not all(isinstance(r, dict) for r in data):
            raise FeatureSchemaError("rows must be objects {column: value}", field="rows")
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise FeatureSchemaError(
        f"cannot ingest a {type(data).__name__}: pass a pandas DataFrame, a pyarrow Table or a "
        "list of row dicts",
        field="rows",
    )


def to_epoch_us(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Times -> (int64 microseconds since the epoch UTC, invalid mask). Numbers are epoch
    seconds, strings ISO 8601, naive times UTC."""
    if pd.api.types.is_bool_dtype(s):
        return np.zeros(len(s), np.int64), np.ones(len(s), bool)
    if pd.api.types.is_numeric_dtype(s):
        ts = pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    elif isinstance(s.dtype, pd.DatetimeTZDtype):
        ts = s.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(s):
        ts = s.dt.tz_localize("UTC")
    else:
        try:
            ts = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
        except (ValueError, TypeError):
            ts = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    bad = ts.isna().to_numpy()
    us = ts.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").view(np.int64)
    return us, bad


def _show(v: Any) -> str:
    text = repr(v.item() if hasattr(v, "item") else v)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class _Checks:
    """Masks of failed checks with a reason each; reasons are only built for reported rows."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[np.ndarray, pd.Series | None, str]] = []
        self.any = np.zeros(n, dtype=bool)

    def add(self, mask: np.ndarray, values: pd.Series | None, reason: str) -> None:
        if mask.any():
            self.items.append((mask, values, reason))
            self.any |= mask

    def report(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for row in np.flatnonzero(self.any)[:limit]:
            reasons = [
                reason.format(value=_show(values.iloc[row]) if values is not None else "")
                for mask, values, reason in self.items
                if mask[row]
            ]
            out.append({"row": int(row), "reasons": reasons})
        return out


def _numeric(s: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(s):
        return np.zeros(len(s)), present.copy()
    num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = present & ~np.isfinite(num)
    return num, bad


def _feature(
    f: FeatureSpec, s: pd.Series | None, n: int, checks: _Checks
) -> np.ndarray:  # (n,) object, None for null
    if s is None:
        return np.full(n, None, dtype=object)
    present = s.notna().to_numpy()
    col = f"feature {f.name!r}"
    if not f.nullable:
        checks.add(~present, None, f"{col} is null but the feature is not nullable")
    if f.dtype in ("float", "int"):
        num, bad = _numeric(s, present)
        if f.dtype == "int":
            whole = np.zeros(n, bool)
            np.equal(num, np.round(num), out=whole, where=~bad & present)
            bad |= present & ~whole
            checks.add(bad, s, f"{col}: {{value}} is not an integer")
        else:
            checks.add(bad, s, f"{col}: {{value}} is not a finite number")
        ok = present & ~bad
        if f.min is not None:
            checks.add(ok & (num < f.min), s, f"{col}: {{value}} is below the minimum {f.min:g}")
        if f.max is not None:
            checks.add(ok & (num > f.max), s, f"{col}: {{value}} is above the maximum {f.max:g}")
        if f.allowed is not None:
            checks.add(ok & ~np.isin(num, np.asarray(f.allowed, dtype=np.float64)), s,
                       f"{col}: {{value}} is not one of the allowed values {f.allowed}")  # fmt: skip
        if f.dtype == "int":
            out = np.full(n, None, dtype=object)
            out[ok] = num[ok].astype(np.int64).tolist() if ok.any() else []
            if pd.api.types.is_integer_dtype(s):  # exact beyond 2**53
                out[ok] = s.to_numpy()[ok].astype(np.int64).tolist() if ok.any() else []
            return out
        out = num.astype(object)
        out[~ok] = None
        return out
    if f.dtype == "bool":
        if pd.api.types.is_bool_dtype(s) and s.dtype != object:
            vals = s.to_numpy(dtype=object)
            bad = np.zeros(n, bool)
        else:
            mapped = s.map(
                lambda v: _BOOL_WORDS.get(v) if isinstance(v, (bool, int, str)) else None
            )
            vals = mapped.to_numpy(dtype=object)
            bad = present & mapped.isna().to_numpy()
        checks.add(bad, s, f"{col}: {{value}} is not a boolean (true/false)")
        ok = present & ~bad
        if f.allowed is not None:
            allowed = np.isin(vals.astype(bool), np.asarray(f.allowed, dtype=bool))
            checks.add(ok & ~allowed, s, f"{col}: {{value}} is not one of the allowed values")
        out = np.full(n, None, dtype=object)
        out[ok] = vals[ok].astype(bool).tolist() if ok.any() else []
        return out
    # string
    vals = s.astype(object).to_numpy()
    out = np.full(n, None, dtype=object)
    if present.any():
        out[present] = [v if isinstance(v, str) else str(v) for v in vals[present]]
    if f.allowed is not None:
        checks.add(present & ~pd.Series(out).isin(f.allowed).to_numpy(), s,
                   f"{col}: {{value}} is not one of the allowed values {f.allowed}")  # fmt: skip
    return out


def _entity(name: str, dtype: str, s: pd.Series, checks: _Checks) -> np.ndarray:
    present = s.notna().to_numpy()
    checks.add(~present, None, f"entity key {name!r} is missing")
    if dtype == "int":
        if pd.api.types.is_integer_dtype(s):
            return s.to_numpy(dtype=np.int64, na_value=0)
        num, bad = _numeric(s, present)
        whole = np.zeros(len(s), bool)
        np.equal(num, np.round(num), out=whole, where=present & ~bad)
        checks.add(present & ~whole, s, f"entity key {name!r}: {{value}} is not an integer")
        return np.where(whole, num, 0).astype(np.int64)
    vals = s.astype(object).to_numpy()
    out = np.array([v if isinstance(v, str) else str(v) for v in vals], dtype=object)
    long_ = present & (pd.Series(out).str.len().to_numpy() > MAX_STRING_KEY)
    checks.add(long_, None, f"entity key {name!r} is longer than {MAX_STRING_KEY} characters")
    return out


def validate_frame(
    group: FeatureGroup, data: Any, *, max_reported: int = MAX_REPORTED_REJECTIONS
) -> ValidatedBatch:
    """Check ``data`` against ``group``; see the module docstring.

    Args:
        group: the definition to check against.
        data: a DataFrame, a pyarrow Table, or a list of row dicts.
        max_reported: rejected rows reported with their reasons (all are counted).
    """
    frame = to_frame(data)
    cols = [str(c) for c in frame.columns]
    frame.columns = cols
    known = set(group.entity_names) | {group.event_time} | set(group.feature_names)
    required = [*group.entity_names, group.event_time]
    required += [f.name for f in group.features if not f.nullable]
    missing = [c for c in required if c not in cols]
    unknown = sorted(set(cols) - known)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        raise FeatureSchemaError(
            f"the batch does not fit feature group {group.ref}: {'; '.join(parts)}. Its columns "
            f"are {sorted(known)} (nullable features may be left out)",
            field="rows",
            details={"missing": missing, "unknown": unknown},
        )
    n = len(frame)
    checks = _Checks(n)
    keys = {e.name: _entity(e.name, e.dtype, frame[e.name], checks) for e in group.entities}
    ts_col = frame[group.event_time]
    event_us, bad_ts = to_epoch_us(ts_col)
    present_ts = ts_col.notna().to_numpy()
    checks.add(~present_ts, None, f"event time {group.event_time!r} is missing")
    checks.add(present_ts & bad_ts, ts_col,
               f"event time {group.event_time!r}: {{value}} is not a time (ISO 8601 or epoch "
               "seconds)")  # fmt: skip
    feats = {
        f.name: _feature(f, frame[f.name] if f.name in frame.columns else None, n, checks)
        for f in group.features
    }
    ok = ~checks.any
    batch = ValidatedBatch(
        keys={k: v[ok] for k, v in keys.items()},
        event_time=event_us[ok],
        features={k: v[ok] for k, v in feats.items()},
        n_received=n,
        n_rejected=int(checks.any.sum()),
        rejected=checks.report(max_reported),
    )
    _drop_duplicates(batch)
    return batch


def _drop_duplicates(batch: ValidatedBatch) -> None:
    """Keep the last row of each (entity, event time) in the batch."""
    if batch.n_accepted < 2:
        return
    frame = pd.DataFrame({**batch.keys, "_t": batch.event_time})
    dup = frame.duplicated(keep="last").to_numpy()
    if not dup.any():
        return
    keep = ~dup
    batch.n_duplicates = int(dup.sum())
    batch.keys = {k: v[keep] for k, v in batch.keys.items()}
    batch.event_time = batch.event_time[keep]
    batch.features = {k: v[keep] for k, v in batch.features.items()}
