"""Point-in-time joins on arrays: for each label row, the latest history row of the same entity
at or before the label's time and within the TTL. No pandas objects inside, no Python loops.

Method: one sort of both tables together, then a running maximum (a sort-merge join, the way a
database computes an as-of join). Each row becomes one int64 ``(entity code, time, position)``
with history rows before label rows (history positions ``0..m-1``, labels ``m..m+n-1``, so at
equal times a label sees the history row: "at or before"). After sorting, the last history row
seen before each label row (``maximum.accumulate`` of history positions) is its candidate; it
counts if it has the label's entity and is no older than the TTL. Times are shifted to start at
zero and divided by their greatest common divisor (second-resolution data in microseconds loses
20 bits), and replaced by their dense rank only when the key still does not fit 63 bits. When it
fits, the row position rides in the low bits and a plain ``np.sort`` replaces ``argsort``.

This computes what ``pandas.merge_asof(by=..., direction="backward", allow_exact_matches=True,
tolerance=ttl)`` does, without its requirement that both sides be sorted by time first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["entity_codes", "point_in_time_indices", "take"]

_KEY_BITS = 63  # int64 without the sign bit


def _bits(x: int) -> int:
    return max(int(x).bit_length(), 1)


def _codes_one(keys: np.ndarray) -> np.ndarray:
    if keys.dtype.kind in "iu" and keys.shape[0]:
        lo, hi = int(keys.min()), int(keys.max())
        # Integer ids in a narrow range are their own codes: no hashing.
        if _bits(hi - lo) <= _bits(keys.shape[0]) + 2:
            return keys.astype(np.int64) - lo
    codes, _ = pd.factorize(keys)
    return codes.astype(np.int64)


def entity_codes(
    label_keys: Sequence[np.ndarray], history_keys: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of (composite) entity keys, equal across the two tables for equal keys.

    Args:
        label_keys: one ``(n,)`` array per key column.
        history_keys: one ``(m,)`` array per key column, in the same order.

    Returns:
        (label codes ``(n,)``, history codes ``(m,)``), non-negative int64.
    """
    n = len(label_keys[0])
    code: np.ndarray | None = None
    for lk, hk in zip(label_keys, history_keys, strict=True):
        both = np.concatenate([np.asarray(lk), np.asarray(hk)])
        c = _codes_one(both)
        # Combine with the previous columns' codes, then compact again.
        code = c if code is None else _codes_one(code * (int(c.max()) + 1) + c)
    assert code is not None
    return code[:n], code[n:]


def _compact_times(label_times: np.ndarray, history_times: np.ndarray) -> tuple[np.ndarray, int]:
    """Both tables' times (history first) as small non-negative int64 in the same order, and
    the unit they are now counted in (the greatest common divisor of the shifted times)."""
    times = np.concatenate([history_times, label_times]).astype(np.int64)
    times -= times.min()
    g = int(np.gcd.reduce(times)) or 1
    if g > 1:
        times //= g
    return times, g


def point_in_time_indices(
    label_codes: np.ndarray,
    label_times: np.ndarray,
    history_codes: np.ndarray,
    history_times: np.ndarray,
    *,
    ttl: int | None = None,
) -> np.ndarray:
    """Index of each label's history row, -1 where there is none.

    Args:
        label_codes: ``(n,)`` int64 entity codes of the labels (see :func:`entity_codes`).
        label_times: ``(n,)`` int64 label times.
        history_codes: ``(m,)`` int64 entity codes of the history.
        history_times: ``(m,)`` int64 event times; at most one row per (entity, time).
        ttl: a history row older than ``label_time - ttl`` does not count (same unit as the
            times); ``None``: no limit.

    Returns:
        ``(n,)`` int64 indices into the history, -1 for no row.
    """
    n, m = label_codes.shape[0], history_codes.shape[0]
    if n == 0 or m == 0:
        return np.full(n, -1, dtype=np.int64)
    codes = np.concatenate([history_codes, label_codes]).astype(np.int64)  # (m + n,)
    times, unit = _compact_times(label_times, history_times)  # (m + n,)
    code_bits, pos_bits = _bits(int(codes.max())), _bits(n + m)
    ranked = code_bits + _bits(int(times.max())) + 1 > _KEY_BITS
    if ranked:  # rare: huge spans at fine resolution; ranks keep the order, not the distance
        _, dense = np.unique(times, return_inverse=True)
        times = dense.astype(np.int64)
    time_bits = _bits(int(times.max()))
    if code_bits + time_bits + pos_bits <= _KEY_BITS:
        key = (codes << (time_bits + pos_bits)) | (times << pos_bits)
        key |= np.arange(n + m, dtype=np.int64)
        del codes, times
        key.sort()
        # Everything below reads the sorted keys front to back: no random access but the
        # final scatter into label order.
        order = key & ((1 << pos_bits) - 1)  # (m + n,) row positions in (entity, time) order
        s_codes = key >> (time_bits + pos_bits)
        s_times = (key >> pos_bits) & ((1 << time_bits) - 1)
        del key
    else:
        is_label = np.zeros(n + m, dtype=np.int64)
        is_label[m:] = 1
        order = np.argsort((codes << (time_bits + 1)) | (times << 1) | is_label)
        s_codes, s_times = codes[order], times[order]
        del codes, times, is_label
    is_hist = order < m
    last = np.maximum.accumulate(np.where(is_hist, np.arange(n + m, dtype=np.int64), -1))
    at_label = np.flatnonzero(~is_hist)  # (n,) sorted positions of the labels
    before = last[at_label]  # (n,) sorted position of each label's candidate, -1: none
    found = before >= 0
    before = np.maximum(before, 0)  # non-decreasing: the gathers below stream
    found &= s_codes[before] == s_codes[at_label]
    label_rows = order[at_label] - m
    hist_rows = order[before]
    if ttl is not None:
        if ranked:
            found &= label_times[label_rows] - history_times[hist_rows] <= ttl
        else:  # (t_label - t_hist) / unit <= ttl / unit, exactly, in whole units
            found &= s_times[at_label] - s_times[before] <= ttl // unit
    out = np.empty(n, dtype=np.int64)
    out[label_rows] = np.where(found, hist_rows, -1)
    return out


def take(values: np.ndarray | pd.Series, idx: np.ndarray) -> Any:
    """``values[idx]`` with a missing value (NaN, None or NA) where ``idx`` is -1. A Series
    keeps its own array type (Arrow strings are taken by Arrow, not as Python objects)."""
    if isinstance(values, pd.Series):
        return values.array.take(idx, allow_fill=True)
    return pd.api.extensions.take(values, idx, allow_fill=True)
