"""Fixtures of the serving tests (helpers in ``serving_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import Models, Server, start_server, stop_server, train_models


@pytest.fixture(scope="session")
def models() -> Models:
    return train_models()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def registry(sqlite_url: str, store: Path) -> Iterator[Any]:
    from serving.registry import ModelRegistry

    reg = ModelRegistry(sqlite_url, store=store)
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any, Path]]:
    """One real server on SQLite shared by a test module: (server, registry, tmp dir)."""
    from serving.registry import ModelRegistry

    tmp = tmp_path_factory.mktemp("live")
    db = f"sqlite:///{tmp / 'autotune.db'}"
    reg = ModelRegistry(db, store=tmp / "store")
    server = start_server(
        db,
        tmp / "store",
        tmp / "server.log",
        "--log-sample",
        "1.0",
        "--log-level",
        "info",
        env={"AUTOTUNE_MODEL_IMPORT_ROOTS": str(tmp / "imports")},
    )
    try:
        yield server, reg, tmp
    finally:
        stop_server(server)
        reg.close()
