"""The app the browser tests serve: ``create_app`` plus the model server, as ``autotune serve``
will mount it once serving joins the composition root."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from autotune.api.app import create_app
from serving.app import build_model_server, install_serving, serving_lifespan


def app_from_env() -> FastAPI:
    app = create_app(db_url=os.environ["AUTOTUNE_DB"])
    server = build_model_server(
        db_url=app.state.service.db, artifact_dir=os.environ["AUTOTUNE_MODEL_STORE"]
    )
    install_serving(app, server)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a), serving_lifespan(server):
            yield

    app.router.lifespan_context = lifespan
    return app
