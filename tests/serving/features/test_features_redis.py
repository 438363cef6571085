"""The Redis online store (the server on 127.0.0.1:6379), under a key prefix of this run."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import customers
from test_features_store import at, row

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("AUTOTUNE_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_store(sqlite_url: str, clock: Any) -> Iterator[Any]:
    from serving.features.online import RedisOnlineStore
    from serving.features.store import FeatureStoreService

    online = RedisOnlineStore(REDIS_URL, prefix=f"autotune-test:{secrets.token_hex(6)}:")
    try:
        online.client.ping()
    except Exception as e:  # noqa: BLE001 - any connection failure means no server
        pytest.fail(f"Redis at {REDIS_URL} is not reachable: {e}", pytrace=False)
    fs = FeatureStoreService(sqlite_url, online=online, clock=clock)
    yield fs
    online.delete_all()
    assert not list(online.client.scan_iter(match=f"{online.prefix}*"))
    fs.close()


def test_redis_online_store_ttl_newer_wins_and_offline_history(redis_store, clock) -> None:
    fs = redis_store
    fs.apply(customers(name="c"))  # ttl 1 h
    fs.ingest("c", [row(1, -10, 1.0, tier="gold"), row(1, -20, 0.5), row(2, -61, 2.0)])
    got = fs.get_online("c", [{"customer_id": i} for i in (1, 2, 3)])
    assert [g.status for g in got] == ["present", "expired", "missing"]
    assert got[0].features == {"spend": 1.0, "orders": None, "tier": "gold", "vip": None}
    fs.ingest("c", [row(1, -30, 9.0)])  # older: history only
    assert fs.get_online("c", [{"customer_id": 1}])[0].features["spend"] == 1.0
    fs.ingest("c", [row(1, -5, 3.0)])
    assert fs.get_online("c", [{"customer_id": 1}])[0].features["spend"] == 3.0
    # Keys expire in Redis itself at event time + TTL.
    key = fs.online._key(fs.get_group("c"), (1,))
    expire_at_ms = (clock().timestamp() - 5 * 60 + 3600) * 1000
    assert abs(fs.online.client.pttl(key) - (expire_at_ms - time.time() * 1000)) < 60_000
    # The offline store still has the whole history for training sets.
    import pandas as pd

    labels = pd.DataFrame({"customer_id": [1, 1], "timestamp": [at(-25), at(-15)]})
    assert fs.historical_features(labels, "c:spend")["spend"].tolist() == [9.0, 0.5]
    clock.advance(3600)
    assert fs.get_online("c", [{"customer_id": 1}])[0].status == "expired"
