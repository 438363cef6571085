"""Mounting the model server: into the main API app, or as a serving-only app.

``create_serving_app`` builds a FastAPI app with the model server alone (``autotune serve-models``,
scaled out behind a load balancer with ``serving_only=True``: predict and read routes, no
registration or alias moves). ``install_serving`` mounts the same routers into another app (the
composition root, ``autotune.api.app.create_app``), whose lifespan must enter
``serving_lifespan(server)``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

import autotune
from autotune.errors import AutotuneError, Refusal, ValidationError
from autotune.storage.engine import Database
from serving.batching import BatchingConfig
from serving.fastpath import FastPath, FrontDoor, front_door
from serving.loaders import DEFAULT_SKOPS_TRUSTED_TYPES, LoaderOptions
from serving.registry import ModelRegistry
from serving.server import (
    FeatureResolver,
    ModelServer,
    ServerConfig,
    admin_router,
    metrics_router,
    oip_router,
    v1_router,
)

__all__ = [
    "ServingApp",
    "create_serving_app",
    "install_serving",
    "serving_lifespan",
    "build_model_server",
    "ServingSettings",
    "app_from_env",
]

log = logging.getLogger("autotune.serving")


def _env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServingSettings:
    """Everything ``serve-models`` can set; ``from_env`` reads ``AUTOTUNE_*`` variables so that
    each uvicorn worker process builds the same server."""

    db_url: str | None = None
    artifact_dir: str | None = None
    serving_only: bool = False
    config: ServerConfig = field(default_factory=ServerConfig)

    @classmethod
    def from_env(cls) -> ServingSettings:
        e = os.environ
        batching = BatchingConfig(
            enabled=_env_bool("AUTOTUNE_SERVING_BATCHING", True),
            max_batch_size=int(e.get("AUTOTUNE_SERVING_MAX_BATCH", 256)),
            max_wait_ms=float(e.get("AUTOTUNE_SERVING_MAX_WAIT_MS", 0.0)),
            max_queue=int(e.get("AUTOTUNE_SERVING_MAX_QUEUE", 1024)),
        )
        trusted = e.get("AUTOTUNE_SKOPS_TRUSTED_TYPES")
        loader = LoaderOptions(
            skops_trusted_types=tuple(t for t in trusted.split(",") if t)
            if trusted is not None
            else DEFAULT_SKOPS_TRUSTED_TYPES
        )
        roots = e.get("AUTOTUNE_MODEL_IMPORT_ROOTS")
        config = ServerConfig(
            poll_interval_s=float(e.get("AUTOTUNE_SERVING_POLL_S", 1.0)),
            batching=batching,
            loader=loader,
            log_sample_rate=float(e.get("AUTOTUNE_SERVING_LOG_SAMPLE", 0.0)),
            import_roots=tuple(roots.split(os.pathsep)) if roots else ("autotune-artifacts",),
        )
        return cls(
            db_url=e.get("AUTOTUNE_DB") or None,
            artifact_dir=e.get("AUTOTUNE_MODEL_STORE") or None,
            serving_only=_env_bool("AUTOTUNE_SERVING_ONLY", False),
            config=config,
        )


def build_model_server(
    *,
    db_url: str | Database | None = None,
    artifact_dir: str | None = None,
    config: ServerConfig | None = None,
    resolver: FeatureResolver | None = None,
    migrate: bool = True,
) -> ModelServer:
    """A model server over the registry in ``db_url`` (the studies' database: a URL, or the
    service's own :class:`autotune.storage.Database` to share its connection pool)."""
    registry = ModelRegistry(db_url, store=artifact_dir, migrate=migrate)
    return ModelServer(registry, config, resolver=resolver)


@asynccontextmanager
async def serving_lifespan(server: ModelServer) -> AsyncIterator[None]:
    """Start the server (read aliases, preload their versions, start polling); close at exit."""
    await asyncio.to_thread(server.start)
    # Everything imported and loaded so far lives as long as the process: move it out of the
    # collector's reach. A full collection over it takes 0.1-0.2 s here, a p99 stall otherwise.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        server.close()
        server.registry.close()


# How long the answer "is FastAPI's OpenTelemetry instrumentation on?" is trusted: a provider
# configured at run time instruments predictions from at most this much later.
TELEMETRY_RECHECK_S = 1.0


class ServingApp(FastAPI):
    """A FastAPI app whose prediction requests skip FastAPI's per-request telemetry check.

    ``FastAPI.__call__`` asks OpenTelemetry on every request whether a tracer, meter or logger
    provider is configured (three provider look-ups and environment reads: about as much CPU as
    the rest of the app's layers together). This app asks at most once per
    :data:`TELEMETRY_RECHECK_S` for the prediction paths; while no provider is configured it
    hands them straight to the front door at the top of its middleware stack
    (:class:`serving.fastpath.FrontDoor`), otherwise to ``FastAPI.__call__`` as any request.
    Every other request goes to ``FastAPI.__call__``.
    """

    _serving_telemetry_on = True
    _serving_telemetry_until = float("-inf")

    def _telemetry_enabled(self) -> bool:
        now = time.monotonic()
        if now >= self._serving_telemetry_until:
            native = getattr(self, "_native_telemetry", None)
            # A FastAPI without the check (other versions): leave every request to it.
            self._serving_telemetry_on = native is None or bool(native.enabled())
            self._serving_telemetry_until = now + TELEMETRY_RECHECK_S
        return self._serving_telemetry_on

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        front = self.middleware_stack
        if type(front) is FrontDoor and scope["type"] == "http" and not self._telemetry_enabled():
            if self.root_path:
                scope["root_path"] = self.root_path
            if front.fast.hit(scope) is not None:
                scope["app"] = self
                await front.guarded(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def answer_now(
        self, scope: dict[str, Any], body: bytes, respond: Callable[[Refusal], None]
    ) -> bool:
        """Answer a prediction request whose whole ``body`` has been read without the ASGI
        machinery (:meth:`serving.fastpath.FrontDoor.answer_now`), for the HTTP protocol
        :class:`serving.httpproto.PredictHttpToolsProtocol`. False when the request must go
        through :meth:`__call__` (not a prediction, telemetry on, an unusual stack, or
        something to wait for); True when ``respond`` has got or will get (status, headers,
        body). ``scope`` is the request's (a copy the app may change)."""
        front = self.middleware_stack
        if type(front) is not FrontDoor or self._telemetry_enabled():
            return False
        if self.root_path:
            scope["root_path"] = self.root_path
        scope["app"] = self
        try:
            return front.answer_now(scope, body, respond)
        except Exception as e:  # as the ASGI way: the app's 500, never a traceback
            front.crash(scope, e, respond)
            return True


def install_serving(
    app: FastAPI, server: ModelServer, *, api_prefix: str = "/v1", admin: bool = True
) -> None:
    """Mount the model server's routers on ``app``.

    Args:
        app: the app (its lifespan must enter ``serving_lifespan(server)``).
        server: the model server.
        api_prefix: where the /v1 model routes go.
        admin: include registration and alias moves (off for serving-only replicas).
    """
    app.state.model_server = server
    # The predict and infer POSTs are answered by a pure ASGI fast path in front of routing,
    # innermost among the app's middleware. A front door at the top of the stack answers them
    # through the same fast path without crossing the layers in between: it runs the limits
    # and auth checks itself and keeps the exception wrappers (serving.fastpath.front_door).
    app.user_middleware.append(Middleware(FastPath, server=server, v1_prefix=api_prefix))
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return front_door(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    # Routes are matched in order: the predict paths first.
    app.include_router(v1_router, prefix=api_prefix)
    app.include_router(oip_router)
    app.include_router(metrics_router)
    if admin:
        app.include_router(admin_router, prefix=api_prefix)


def create_serving_app(
    *,
    db_url: str | None = None,
    artifact_dir: str | None = None,
    serving_only: bool = False,
    config: ServerConfig | None = None,
    resolver: FeatureResolver | None = None,
    server: ModelServer | None = None,
    auth: bool | None = None,
) -> FastAPI:
    """The model server as an app of its own.

    Args:
        db_url: the registry's (studies') database; ``None``: ``AUTOTUNE_DB`` or the default.
        artifact_dir: the artifact store; ``None``: ``AUTOTUNE_MODEL_STORE`` or the default.
        serving_only: predict and read routes only, and no schema migration (replicas).
        config: server settings.
        resolver: entity -> features resolver (feature store).
        server: serve this one instead of building one (the app still closes it).
        auth: require API keys (:mod:`autotune.auth`) on every route but health; ``None``:
            ``AUTOTUNE_AUTH=1`` turns it on (``serve-models`` sets it).
    """
    srv = server or build_model_server(
        db_url=db_url,
        artifact_dir=artifact_dir,
        config=config,
        resolver=resolver,
        migrate=not serving_only,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with serving_lifespan(srv):
            yield

    app = ServingApp(
        title="AutoTune model server",
        version=autotune.__version__,
        description="Open Inference Protocol (/v2) and AutoTune's model routes (/v1). Every "
        'error is {"error": {"code", "message", "details"}}.',
        lifespan=lifespan,
    )
    install_error_handlers(app)
    from autotune.api.limits import install_limits

    install_limits(app)  # body size (413) and per-key rate (429), as on autotune serve
    install_serving(app, srv, admin=not serving_only)
    if auth is None:
        auth = _env_bool("AUTOTUNE_AUTH", False)
    if auth:
        from autotune.auth import AuthMiddleware, KeyStore

        app.add_middleware(AuthMiddleware, keys=KeyStore(srv.registry.db))
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``serving.app:app_from_env``) for several worker processes."""
    s = ServingSettings.from_env()
    if s.config.log_sample_rate > 0:
        pred_log = logging.getLogger("autotune.serving.predictions")
        if not pred_log.handlers:  # uvicorn configures only its own loggers
            pred_log.addHandler(logging.StreamHandler())
            pred_log.setLevel(logging.INFO)
    return create_serving_app(
        db_url=s.db_url, artifact_dir=s.artifact_dir, serving_only=s.serving_only, config=s.config
    )


# ------------------------------------------------------------------------------ error handlers
# The serving-only app's own small handler set, with the same body shape as the main API's
# (which installs its own when the routers are mounted there).


def _payload(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


async def _autotune_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AutotuneError)
    headers = {"retry-after": "1"} if exc.retryable else None
    return JSONResponse(exc.to_payload(), status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
    loc = first["loc"]
    field_ = ".".join(loc[1:] if len(loc) > 1 else loc)
    err = ValidationError(
        f"{'.'.join(loc)}: {first['msg']}", field=field_ or "body", details={"errors": errors}
    )
    return JSONResponse(err.to_payload(), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        body = _payload(
            "not_found", f"no route {request.method} {request.url.path}", {"path": request.url.path}
        )
    elif exc.status_code == 405:
        body = _payload(
            "method_not_allowed",
            f"method {request.method} is not allowed on {request.url.path}",
            {"path": request.url.path},
        )
    else:
        body = _payload("error", str(exc.detail), {})
    return JSONResponse(body, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        _payload("internal", "internal server error; the server log has the details", {}),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AutotuneError, _autotune_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
