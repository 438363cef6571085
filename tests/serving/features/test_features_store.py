"""The feature store service on SQLite and PostgreSQL: definitions and versions, ingestion
validation, dedup, online reads and their TTL, point-in-time training sets, consistency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import customers
from sqlalchemy import text

from autotune.errors import ValidationError
from serving.features.errors import (
    FeatureGroupNotFoundError,
    FeatureSchemaError,
    IngestionRejectedError,
    TrainingSetNotFoundError,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # the fake clock's start


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def row(cid: int, minutes: float, spend: float, **kw: Any) -> dict[str, Any]:
    return {"customer_id": cid, "ts": at(minutes), "spend": spend, **kw}


def count(store: Any, name: str, version: int = 1) -> int:
    gid = store._group(name, version, fresh=True).id
    with store.db.read_engine.connect() as c:
        return c.execute(text(f"SELECT count(*) FROM feature_data_{gid}")).scalar_one()


# ----------------------------------------------------------------------------- definitions


def test_apply_creates_updates_in_place_and_versions_breaking_changes(store, gname) -> None:
    r = store.apply(customers(name=gname))
    assert (r.action, r.group.version) == ("created", 1)
    assert store.apply(customers(name=gname)).action == "unchanged"
    # Metadata and an added nullable feature: same version, history kept.
    store.ingest(gname, [row(1, -5, 10.0)])
    feats = [*customers()["features"], {"name": "age", "dtype": "int"}]
    r = store.apply(customers(name=gname, ttl_s=7200.0, owner="risk", features=feats))
    assert (r.action, r.group.version, r.group.ttl_s) == ("updated", 1, 7200.0)
    assert r.group.feature_names[-1] == "age" and count(store, gname) == 1
    store.ingest(gname, [row(2, -4, 3.0, age=40)])
    got = store.get_online(gname, [{"customer_id": 1}, {"customer_id": 2}])
    assert got[0].features["age"] is None and got[1].features["age"] == 40
    # Retyping a feature breaks readers: a new version with its own history.
    feats = [dict(f) for f in customers()["features"]]
    feats[1]["dtype"] = "float"
    r = store.apply(customers(name=gname, features=feats))
    assert (r.action, r.group.version) == ("new_version", 2)
    assert any("orders" in why for why in r.reasons)
    assert store.get_group(gname).version == 2 and store.get_group(gname, 1).owner == "risk"
    assert count(store, gname, 2) == 0
    assert [g.version for g in store.list_groups(all_versions=True) if g.name == gname] == [2, 1]
    # Narrowing a range is breaking too.
    feats[0]["max"] = 100
    assert store.apply(customers(name=gname, features=feats)).action == "new_version"


@pytest.mark.parametrize(
    "bad",
    [
        {"entities": []},
        {"features": [{"name": "x", "dtype": "decimal"}]},
        {"features": [{"name": "x", "dtype": "string", "min": 1}]},
        {"features": [{"name": "x", "min": 5, "max": 1}]},
        {"features": [{"name": "_x"}]},
        {"features": [{"name": "ts"}]},
        {"ttl_s": -1},
        {"name": "bad name"},
    ],
)
def test_invalid_definitions_are_refused(store, gname, bad) -> None:
    with pytest.raises(ValidationError):
        store.apply({**customers(name=gname), **bad})


def test_unknown_group_is_not_found(store) -> None:
    with pytest.raises(FeatureGroupNotFoundError):
        store.get_group("no_such_group")
    with pytest.raises(FeatureGroupNotFoundError):
        store.ingest("no_such_group", [row(1, 0, 1.0)])


# ------------------------------------------------------------------------------- ingestion


def test_rejected_rows_come_back_with_reasons_and_the_rest_is_stored(store, gname) -> None:
    store.apply(customers(name=gname))
    rows = [
        row(1, -10, 5.0, orders=2, tier="gold", vip=True),
        row(2, -10, -1.0),  # below min
        row(3, -10, None),  # null, not nullable
        row(4, -10, 1.0, orders=1.5),  # not an integer
        row(5, -10, 1.0, tier="bronze"),  # not allowed
        row(6, -10, 1.0, vip="maybe"),  # not a bool
        {"customer_id": None, "ts": at(-10), "spend": 1.0},  # no entity
        {"customer_id": 8, "ts": "yesterday-ish", "spend": 1.0},  # no time
        row(9, -10, "abc"),  # not a number
        row(10, -10, 2.0, orders="3", vip="false"),  # coercible
    ]
    r = store.ingest(gname, rows)
    assert (r.received, r.accepted, r.rejected) == (10, 2, 8)
    reasons = {x["row"]: " ".join(x["reasons"]) for x in r.rejections}
    assert "below the minimum 0" in reasons[1] and "not nullable" in reasons[2]
    assert "not an integer" in reasons[3] and "allowed values" in reasons[4]
    assert "not a boolean" in reasons[5] and "entity key 'customer_id' is missing" in reasons[6]
    assert "not a time" in reasons[7] and "'abc' is not a finite number" in reasons[8]
    assert count(store, gname) == 2
    got = store.get_online(gname, [{"customer_id": 10}])[0]
    assert got.features == {"spend": 2.0, "orders": 3, "tier": None, "vip": False}


def test_fail_mode_and_schema_errors_store_nothing(store, gname) -> None:
    store.apply(customers(name=gname))
    with pytest.raises(IngestionRejectedError) as e:
        store.ingest(gname, [row(1, -1, 1.0), row(2, -1, -5.0)], on_invalid="fail")
    assert e.value.details["n_rejected"] == 1 and e.value.details["rejected"][0]["row"] == 1
    with pytest.raises(FeatureSchemaError, match="missing column"):
        store.ingest(gname, [{"customer_id": 1, "spend": 1.0}])  # no event time
    with pytest.raises(FeatureSchemaError, match="unknown column"):
        store.ingest(gname, [{**row(1, -1, 1.0), "spnd": 2.0}])
    with pytest.raises(FeatureSchemaError):
        store.ingest(gname, "not a table")
    assert count(store, gname) == 0


def test_reingesting_the_same_entity_and_time_replaces_never_duplicates(store, gname) -> None:
    store.apply(customers(name=gname))
    batch = pd.DataFrame(
        {"customer_id": [1, 1, 2], "ts": pd.to_datetime([at(-30), at(-20), at(-30)]),
         "spend": [1.0, 2.0, 3.0]}
    )  # fmt: skip
    store.ingest(gname, batch)
    r = store.ingest(gname, batch.assign(spend=[1.0, 9.0, 3.0]))
    assert r.accepted == 3 and count(store, gname) == 3
    # Repeats inside one batch: the last one wins.
    r = store.ingest(gname, [row(2, -30, 4.0), row(2, -30, 5.0)])
    assert r.duplicates_in_batch == 1 and count(store, gname) == 3
    online = store.get_online(gname, [{"customer_id": 1}, {"customer_id": 2}])
    assert [o.features["spend"] for o in online] == [9.0, 5.0]
    # An older event arriving late goes to history but never replaces the newer online value.
    store.ingest(gname, [row(1, -50, 100.0)])
    assert store.get_online(gname, [{"customer_id": 1}])[0].features["spend"] == 9.0
    assert count(store, gname) == 4


# ------------------------------------------------------------------------------- online


def test_online_reads_respect_the_ttl(store, gname, clock) -> None:
    store.apply(customers(name=gname))  # ttl 1 h
    store.ingest(gname, [row(1, -10, 1.0), row(2, -59, 2.0), row(3, -61, 3.0)])
    got = store.get_online(gname, [{"customer_id": i} for i in (1, 2, 3, 4)])
    assert [g.status for g in got] == ["present", "present", "expired", "missing"]
    assert got[2].features == dict.fromkeys(["spend", "orders", "tier", "vip"])
    assert got[0].event_time == T0 - timedelta(minutes=10)
    clock.advance(45 * 60)
    got = store.get_online(gname, [{"customer_id": 1}, {"customer_id": 2}], features=["spend"])
    assert [(g.status, g.features) for g in got] == [
        ("present", {"spend": 1.0}), ("expired", {"spend": None})
    ]  # fmt: skip
    with pytest.raises(ValidationError):
        store.get_online(gname, [{"customer": 1}])
    with pytest.raises(FeatureSchemaError):
        store.get_online(gname, [{"customer_id": 1}], features=["nope"])


def test_composite_string_keys(store, gname) -> None:
    store.apply({
        "name": gname, "entities": [{"name": "country", "dtype": "string"}, "store_id"],
        "event_time": "ts", "features": [{"name": "sales", "dtype": "float"}],
    })  # fmt: skip
    store.ingest(gname, [
        {"country": "fr", "store_id": 1, "ts": at(-3), "sales": 1.0},
        {"country": "de", "store_id": 1, "ts": at(-2), "sales": 2.0},
        {"country": "fr", "store_id": 2, "ts": at(-1), "sales": 3.0},
    ])  # fmt: skip
    got = store.get_online(
        gname, [{"country": "fr", "store_id": 2}, {"country": "de", "store_id": 2}]
    )
    assert [g.features["sales"] for g in got] == [3.0, None]
    labels = pd.DataFrame({"country": ["fr", "fr", "de"], "store_id": [1, 2, 1],
                           "timestamp": [at(0), at(-2), at(0)]})  # fmt: skip
    out = store.historical_features(labels, [f"{gname}:sales"])
    assert out["sales"].tolist()[0] == 1.0 and np.isnan(out["sales"].tolist()[1])


# ------------------------------------------------------------------------- point in time


def test_point_in_time_join_has_no_leakage_from_the_future(store, gname) -> None:
    store.apply(customers(name=gname, ttl_s=600.0))  # 10 min
    store.ingest(gname, [
        row(1, 0, 10.0), row(1, 5, 20.0), row(1, 30, 999.0),  # 999 is the future for t=6..29
        row(2, 0, 7.0),
    ])  # fmt: skip
    labels = pd.DataFrame({
        "customer_id": [1, 1, 1, 1, 2, 2, 3],
        "timestamp": [at(-1), at(5), at(6), at(29), at(10), at(10.5), at(6)],
        "label": [0, 1, 0, 1, 0, 1, 0],
    })  # fmt: skip
    out = store.historical_features(labels, f"{gname}:spend,{gname}:orders")
    # before any value | exactly at the event time | the latest before | older than the TTL
    # (t=29 sees 5 -> 24 min old, expired; 999 at 30 must not leak) | TTL edge | unknown.
    expect = [np.nan, 20.0, 20.0, np.nan, 7.0, np.nan, np.nan]
    np.testing.assert_array_equal(out["spend"].to_numpy(dtype=float), expect)
    assert list(out.columns) == ["customer_id", "timestamp", "label", "spend", "orders"]
    assert out["label"].tolist() == labels["label"].tolist()  # row order kept


def test_training_sets_are_versioned_and_join_several_groups(store, gname) -> None:
    other = gname + "_b"
    store.apply(customers(name=gname))
    store.apply(customers(name=other, features=[{"name": "spend", "dtype": "float"},
                                                {"name": "visits", "dtype": "int"}]))  # fmt: skip
    store.ingest(gname, [row(1, -20, 1.0), row(2, -20, 2.0)])
    store.ingest(other, [{"customer_id": 1, "ts": at(-10), "spend": 5.0, "visits": 3}])
    labels = pd.DataFrame({"customer_id": [1, 2], "timestamp": [at(0), at(0)], "y": [1, 0]})
    ts = store.create_training_set(
        {"name": gname, "features": [gname, f"{other}:*"], "label": "y"}, labels
    )
    # A feature name two groups share is prefixed with the group's name.
    assert ts.columns == [f"{gname}__spend", "orders", "tier", "vip", f"{other}__spend", "visits"]
    assert ts.features[0] == f"{gname}@1:spend" and ts.version == 1 and ts.n_rows == 2
    assert (
        store.create_training_set(
            {"name": gname, "features": [gname, f"{other}:*"], "label": "y"}, labels
        ).version
        == 1
    )  # same labels, same features: same version
    frame = store.training_set_frame(gname)
    assert frame[f"{other}__spend"].tolist()[0] == 5.0 and frame["visits"].isna().tolist()[1]
    ts2 = store.create_training_set({"name": gname, "features": [f"{gname}:spend"]}, labels.head(1))
    assert ts2.version == 2 and store.get_training_set(gname, 1).n_rows == 2
    with pytest.raises(TrainingSetNotFoundError):
        store.get_training_set(gname, 9)
    with pytest.raises(FeatureSchemaError):
        store.create_training_set({"name": gname, "features": ["bad ref!"]}, labels)
    with pytest.raises(FeatureSchemaError, match="entity key"):
        store.historical_features(labels.drop(columns="customer_id"), [gname])


def test_online_values_at_t_equal_offline_point_in_time_values_at_t(store, gname, clock) -> None:
    store.apply(customers(name=gname))
    rng = np.random.default_rng(0)
    n = 400
    batch = pd.DataFrame({
        "customer_id": rng.integers(0, 40, n),
        "ts": [at(float(m)) for m in rng.uniform(-120, 0, n).round(3)],
        "spend": rng.uniform(0, 100, n).round(6),
        "orders": rng.integers(0, 9, n),
        "tier": rng.choice(["gold", "silver"], n),
        "vip": rng.random(n) < 0.5,
    })  # fmt: skip
    shuffled = batch.sample(frac=1, random_state=0)
    for start in range(0, n, 150):  # three batches, out of time order
        store.ingest(gname, shuffled.iloc[start : start + 150])
    ids = list(range(45))
    online = store.get_online(gname, [{"customer_id": i} for i in ids])
    labels = pd.DataFrame({"customer_id": ids, "timestamp": [clock().isoformat()] * len(ids)})
    offline = store.historical_features(labels, [gname])
    for o, (_, off) in zip(online, offline.iterrows(), strict=True):
        for f in ("spend", "orders", "tier", "vip"):
            a, b = o.features[f], off[f]
            assert (a is None and pd.isna(b)) or a == b, (o.entity, f, a, b)
    assert {o.status for o in online} == {"present", "expired", "missing"}
    # The same through the multi-group row API the model server uses.
    rows = store.online_features([{"customer_id": i} for i in ids], [f"{gname}:spend"])
    assert [r["spend"] for r in rows] == [o.features["spend"] for o in online]


def test_arrow_tables_and_an_in_memory_database(clock) -> None:
    pa = pytest.importorskip("pyarrow")
    from serving.features.store import FeatureStoreService

    fs = FeatureStoreService("sqlite://", clock=clock)  # one shared connection, locked reads
    try:
        fs.apply(customers(name="mem"))
        table = pa.table({"customer_id": [1, 2], "ts": [at(-2), at(-1)], "spend": [1.0, 2.0],
                          "vip": [True, None]})  # fmt: skip
        assert fs.ingest("mem", table).accepted == 2
        got = fs.get_online("mem", [{"customer_id": 1}, {"customer_id": 2}])
        assert [g.features["vip"] for g in got] == [True, None]
        out = fs.historical_features(pa.table({"customer_id": [2], "timestamp": [at(0)]}), "mem")
        assert out["spend"].tolist() == [2.0] and out["vip"].tolist() == [None]
    finally:
        fs.close()
