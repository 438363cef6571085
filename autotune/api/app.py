"""The composition root: builds the service and mounts every router.

``create_app(service)`` serves a given service (tests, embedding); ``create_app(db_url=...)``
builds one and closes it on shutdown. ``app_from_env`` is the factory that ``autotune serve``
hands uvicorn as an import string, so each worker process builds its own app and its own
database pool from ``AUTOTUNE_DB``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import autotune
from autotune.api.errors import install_error_handlers
from autotune.api.limits import install_limits
from autotune.api.routes import health, plots, studies, trials
from autotune.api.settings import Settings
from autotune.dashboard import mount_dashboard
from autotune.service import StudyService

__all__ = ["create_app", "app_from_env", "API_PREFIX", "AUTH_ENV"]

API_PREFIX = "/v1"
AUTH_ENV = "AUTOTUNE_AUTH"
"""``1`` turns authentication on (``autotune serve`` sets it for its workers)."""

_DESCRIPTION = """\
AutoTune's tuning service. Create a study (a search space and objectives), ask it for
trials with `suggest`, evaluate them, and tell it how they did with `observe`.

Every error is `{"error": {"code", "message", "details"}}`; `details.field` names the bad input.

With authentication on, every route but health needs an API key (`Authorization: Bearer <key>`
or `X-API-Key: <key>`): 401 without a valid one, 403 when its scope (read < write < admin) is
too small. A key sees and changes only its own project's studies, models and feature groups.
"""


def create_app(
    service: StudyService | None = None,
    *,
    db_url: str | None = None,
    serving: bool = False,
    artifact_dir: str | None = None,
    online_store: str | None = None,
    auth: bool | None = None,
) -> FastAPI:
    """Build the API app.

    Args:
        service: serve this service (the caller owns and closes it).
        db_url: without ``service``, build one on this SQLAlchemy URL (``None``: the service's
            default, ``AUTOTUNE_DB`` or a SQLite file); the app closes it on shutdown.
        serving: also mount the model registry and model server (``/v1/models``, ``/v2``,
            ``/metrics``) and the feature store (``/v1/feature-groups``,
            ``/v1/training-sets``) on the same database; ``autotune serve`` does. The model
            server reads entity features from that feature store.
        artifact_dir: the model artifact store (default ``AUTOTUNE_MODEL_STORE`` or the
            registry's default directory).
        online_store: the feature store's online store: ``None`` for the SQL table in the same
            database (or ``AUTOTUNE_ONLINE_STORE``), or a ``redis://`` URL.
        auth: require an API key on every route but health (:mod:`autotune.auth`); each
            request then runs in its key's project. ``None``: ``AUTOTUNE_AUTH=1`` turns it on
            (``autotune serve`` sets it). Off: everything runs in project ``default`` and no
            key is ever looked at.
    """
    if service is not None and db_url is not None:
        raise ValueError("pass either service or db_url, not both")
    owned = service is None
    svc = service if service is not None else StudyService(db_url)
    model_server = None
    feature_store = None
    if serving:
        # The composition root is the one place where the tuning core meets serving.
        from serving.app import ServingSettings, build_model_server
        from serving.features.resolver import FeatureStoreResolver
        from serving.features.store import FeatureStoreService

        settings = ServingSettings.from_env()
        feature_store = FeatureStoreService(
            svc.db,
            online=online_store or os.environ.get("AUTOTUNE_ONLINE_STORE") or None,
            migrate=False,
        )
        model_server = build_model_server(
            db_url=svc.db,
            artifact_dir=artifact_dir or settings.artifact_dir,
            config=settings.config,
            resolver=FeatureStoreResolver(feature_store),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if model_server is None:
                yield
            else:
                from serving.app import serving_lifespan

                async with serving_lifespan(model_server):
                    yield
        finally:
            if feature_store is not None:
                feature_store.close()
            if owned:
                svc.close()

    app_class = FastAPI
    if model_server is not None:
        from serving.app import ServingApp

        app_class = ServingApp  # predictions skip FastAPI's per-request telemetry check
    app = app_class(
        title="AutoTune",
        version=autotune.__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = svc
    if auth is None:
        auth = os.environ.get(AUTH_ENV, "0").strip().lower() in ("1", "true", "yes", "on")
    app.state.auth = auth
    install_error_handlers(app)
    install_limits(app)  # body size (413) and per-key rate (429): autotune/api/limits.py
    if model_server is not None:
        from serving.app import install_serving

        # Before the other routers: the predict paths are matched first.
        install_serving(app, model_server, api_prefix=API_PREFIX)
    if feature_store is not None:
        from serving.features.api import install_features

        install_features(app, feature_store, prefix=API_PREFIX)
    for router in (health.router, studies.router, trials.router, plots.router):
        app.include_router(router, prefix=API_PREFIX)
    mount_dashboard(app)
    if auth:
        from autotune.api.routes import keys as keys_routes
        from autotune.auth import AuthMiddleware, KeyStore

        app.state.keys = KeyStore(svc.db)
        app.include_router(keys_routes.router, prefix=API_PREFIX)
        # Added last: the outermost middleware, so a request without a key goes no further.
        app.add_middleware(AuthMiddleware, keys=app.state.keys)
        _document_keys(app)
    return app


def _document_keys(app: FastAPI) -> None:
    """Declare the API key in the OpenAPI document (so /docs has an Authorize button)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI: amended once
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An AutoTune API key."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """uvicorn factory (``autotune.api.app:app_from_env``): settings from the environment."""
    return create_app(db_url=Settings.from_env().db_url, serving=True)
