"""Fixtures of the feature store tests: a store on SQLite or PostgreSQL with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

CUSTOMERS = {
    "name": "customers",
    "entities": [{"name": "customer_id", "dtype": "int"}],
    "event_time": "ts",
    "ttl_s": 3600.0,
    "owner": "growth",
    "description": "spend per customer",
    "features": [
        {"name": "spend", "dtype": "float", "min": 0, "nullable": False},
        {"name": "orders", "dtype": "int", "min": 0},
        {"name": "tier", "dtype": "string", "allowed": ["gold", "silver"]},
        {"name": "vip", "dtype": "bool"},
    ],
}


def customers(**changes: Any) -> dict[str, Any]:
    spec = {**CUSTOMERS, **changes}
    spec["features"] = [dict(f) for f in spec["features"]]
    return spec


@pytest.fixture
def store(db_url: str, clock: Any, unique_name: str) -> Iterator[Any]:
    """A feature store on ``db_url``; group names get the test's unique suffix via ``gname``."""
    from serving.features.store import FeatureStoreService

    fs = FeatureStoreService(db_url, clock=clock)
    yield fs
    fs.close()


@pytest.fixture
def gname(unique_name: str) -> str:
    """A group name no other test uses (tests share the session's PostgreSQL database)."""
    return "g_" + unique_name[-40:].strip("_").replace("-", "_")
