"""Bulk writes of a validated batch: the offline upsert and the SQL online store's upsert.

SQLite: one prepared statement through ``executemany`` (rows sorted by primary key, so the
inserts walk the B-tree in order). PostgreSQL: binary ``COPY`` of the sorted batch straight
into the offline table under a savepoint; if a row is there already (a re-ingest), back to the
savepoint and ``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT``. The
online table is upserted from a temporary table of each entity's latest row. Both run inside the
caller's transaction, so a batch is stored whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Table
from sqlalchemy.orm import Session

from serving.features.tables import EVENT_TIME, INGESTED_AT
from serving.features.validation import ValidatedBatch

__all__ = ["write_sqlite", "write_postgres", "latest_per_entity"]


def latest_per_entity(batch: ValidatedBatch) -> np.ndarray:
    """Indices of each entity's latest row in the batch."""
    order = np.argsort(batch.event_time, kind="stable")
    keys = pd.DataFrame({k: v[order] for k, v in batch.keys.items()})
    return order[~keys.duplicated(keep="last").to_numpy()]


def _key_order(batch: ValidatedBatch, names: list[str]) -> np.ndarray:
    """Row order by (entity keys..., event time): inserts walk the primary key's B-tree in
    order instead of jumping around it (about 1.3x faster on SQLite for 1 us/row of sorting)."""
    order = np.argsort(batch.event_time)
    for k in reversed(names):
        order = order[np.argsort(batch.keys[k][order], kind="stable")]
    return order


def _row_columns(g: Any, batch: ValidatedBatch, idx: np.ndarray | None) -> list[list[Any]]:
    pick = (lambda a: a) if idx is None else (lambda a: a[idx])
    return [
        *(pick(batch.keys[k]).tolist() for k in g.group.entity_names),
        pick(batch.event_time).tolist(),
        *(pick(batch.features[f]).tolist() for f in g.group.feature_names),
    ]


def _columns(g: Any) -> list[str]:
    return [*g.group.entity_names, EVENT_TIME, *g.group.feature_names, INGESTED_AT]


def _upsert_sql(table: Table, g: Any, q: Callable[[str], str], *, online: bool) -> str:
    keys = g.group.entity_names if online else [*g.group.entity_names, EVENT_TIME]
    set_cols = [c for c in _columns(g) if c not in keys]
    sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in set_cols)
    sql = f"ON CONFLICT ({', '.join(q(k) for k in keys)}) DO UPDATE SET {sets}"
    if online:  # never replace a newer value with an older one
        sql += f" WHERE excluded.{q(EVENT_TIME)} >= {q(table.name)}.{q(EVENT_TIME)}"
    return sql


def _sorted_with_latest(batch: ValidatedBatch, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows in (entity, event time) order, and which of them is its entity's latest (the last
    of its run)."""
    order = _key_order(batch, names)
    last = np.ones(order.shape[0], dtype=bool)
    if order.shape[0] > 1:
        same = np.ones(order.shape[0] - 1, dtype=bool)
        for k in names:
            col = batch.keys[k][order]
            same &= col[1:] == col[:-1]
        last[:-1] = ~same
    return order, last


def write_sqlite(s: Session, g: Any, batch: ValidatedBatch, now: int, sql_online: bool) -> None:
    q = s.get_bind().dialect.identifier_preparer.quote
    cols = _columns(g)
    names = ", ".join(q(c) for c in cols)
    marks = ", ".join("?" * len(cols))
    raw = s.connection().connection.driver_connection
    cur = raw.cursor()
    try:
        order, last = _sorted_with_latest(batch, g.group.entity_names)
        for table, idx in ((g.offline, order), (g.online, order[last])):
            if table is g.online and not sql_online:
                continue
            online = table is g.online
            sql = f"INSERT INTO {q(table.name)} ({names}) VALUES ({marks}) " + _upsert_sql(
                table, g, q, online=online
            )
            cur.executemany(sql, zip(*_row_columns(g, batch, idx), repeat(now)))
    finally:
        cur.close()


_PG_TYPES = {"float": "float8", "int": "int8", "bool": "bool", "string": "text"}


def write_postgres(s: Session, g: Any, batch: ValidatedBatch, now: int, sql_online: bool) -> None:
    import psycopg

    q = s.get_bind().dialect.identifier_preparer.quote
    cols = _columns(g)
    names = ", ".join(q(c) for c in cols)
    raw = s.connection().connection.driver_connection
    order, last = _sorted_with_latest(batch, g.group.entity_names)
    types = [
        *("int8" if e.dtype == "int" else "text" for e in g.group.entities),
        "int8",
        *(_PG_TYPES[f.dtype] for f in g.group.features),
        "int8",
    ]

    def copy_rows(cur: Any, table: str, idx: np.ndarray) -> None:
        with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in zip(*_row_columns(g, batch, idx), repeat(now)):
                copy.write_row(row)

    tmp = "_feature_batch"
    with raw.cursor() as cur:
        # New events (the usual case) are copied straight into the offline table, in primary-key
        # order. If any (entity, event time) is there already, the COPY fails on the key: undo
        # it to the savepoint and upsert through a temporary table instead.
        cur.execute("SAVEPOINT feature_copy")
        try:
            copy_rows(cur, q(g.offline.name), order)
            cur.execute("RELEASE SAVEPOINT feature_copy")
            upserted = False
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT feature_copy")
            upserted = True
        if not upserted and not sql_online:
            return
        cur.execute(f"CREATE TEMP TABLE {tmp} (LIKE {q(g.offline.name)}) ON COMMIT DROP")
        # The temporary table holds every row when they are to be upserted, else only each
        # entity's latest (all the online table needs: no server-side DISTINCT ON).
        copy_rows(cur, tmp, order if upserted else order[last])
        if upserted:
            cur.execute(
                f"INSERT INTO {q(g.offline.name)} ({names}) SELECT {names} FROM {tmp} "
                + _upsert_sql(g.offline, g, q, online=False)
            )
        if sql_online:
            latest = f"SELECT DISTINCT ON ({', '.join(q(k) for k in g.group.entity_names)}) " \
                if upserted else "SELECT "  # fmt: skip
            order_by = (
                f" ORDER BY {', '.join(q(k) for k in g.group.entity_names)}, {q(EVENT_TIME)} DESC"
                if upserted
                else ""
            )
            cur.execute(
                f"INSERT INTO {q(g.online.name)} ({names}) {latest}{names} FROM {tmp}{order_by} "
                + _upsert_sql(g.online, g, q, online=True)
            )
        cur.execute(f"DROP TABLE {tmp}")
