"""The model server's HTTP face: the Open Inference Protocol (/v2), AutoTune's model routes
(/v1) and /metrics, over a :class:`serving.runtime.ModelServer`.

The routers are thin: they parse, call the server and shape the JSON. The predict and infer
paths are the hot path: :class:`serving.fastpath.FastPath` answers them before routing, and the
routes declared here document them (and answer through the same code where the middleware is not
installed). Registration and alias moves live on ``admin_router`` so a serving-only replica can
leave them out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

import autotune
from autotune.errors import UnavailableError, ValidationError
from serving.errors import ModelNotFoundError
from serving.fastpath import infer_v2, predict_v1
from serving.metrics import CONTENT_TYPE
from serving.registry import DEFAULT_ALIAS
from serving.runtime import (
    FeatureResolver,
    LoadedVersion,
    ModelServer,
    PredictionLogger,
    ServerConfig,
)
from serving.schemas import (
    AliasEvent,
    Lineage,
    ModelDetail,
    ModelVersion,
    OutputSchema,
    PromotionResult,
    Signature,
)

__all__ = [
    "ModelServer",
    "ServerConfig",
    "LoadedVersion",
    "FeatureResolver",
    "PredictionLogger",
    "oip_router",
    "v1_router",
    "admin_router",
    "metrics_router",
]


def _answer(answer: tuple[int, bytes, list[tuple[bytes, bytes]]]) -> Response:
    status, body, headers = answer
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
    )


def _server(request: Request) -> ModelServer:
    return request.app.state.model_server


# ----------------------------------------------------------------------------------- /metrics

metrics_router = APIRouter(tags=["serving"])


@metrics_router.get(
    "/metrics", summary="Prometheus metrics of the model server", response_class=PlainTextResponse
)
def metrics(request: Request) -> Response:
    return Response(_server(request).metrics.render(), media_type=CONTENT_TYPE)


# ------------------------------------------------------------- Open Inference Protocol (/v2)

oip_router = APIRouter(prefix="/v2", tags=["inference (Open Inference Protocol)"])

_OIP_TYPES = {"float": "FP32", "int": "INT64", "bool": "BOOL"}


@oip_router.get("", summary="Server metadata")
def oip_server_metadata() -> dict[str, Any]:
    return {"name": "autotune-serving", "version": autotune.__version__, "extensions": []}


@oip_router.get("/health/live", summary="The process is up")
def oip_live() -> dict[str, bool]:
    return {"live": True}


@oip_router.get("/health/ready", summary="The registry was read and alias holders are loaded")
def oip_ready(request: Request) -> Any:
    server = _server(request)
    if not server.ready:
        raise UnavailableError(
            "the model server has not read the registry yet; retry shortly",
            details={"last_poll_error": server.last_poll_error},
        )
    return {"ready": True}


def _oip_metadata(server: ModelServer, name: str, ref: int | str | None) -> dict[str, Any]:
    detail = server.registry.get_model(name, history_limit=0)
    version, alias = server.registry.resolve(name, ref)
    mv = next((v for v in detail.model_versions if v.version == version), None)
    if mv is None:
        raise ModelNotFoundError(f"model {name!r} has no version {version}")
    out = mv.output_schema
    return {
        "name": name,
        "versions": [str(v) for v in detail.versions],
        "platform": mv.artifact.format,
        "inputs": [
            {"name": f.name, "datatype": _OIP_TYPES[f.type], "shape": [-1]}
            for f in mv.signature.inputs
        ],
        "outputs": [{"name": out.name, "datatype": out.datatype, "shape": [-1]}],
        "parameters": {"version": version, "alias": alias, "aliases": detail.aliases},
    }


@oip_router.get("/models/{name}", summary="Model metadata (the production alias)")
def oip_model(name: str, request: Request) -> dict[str, Any]:
    return _oip_metadata(_server(request), name, None)


@oip_router.get("/models/{name}/versions/{version}", summary="Model metadata of a version")
def oip_model_version(name: str, version: str, request: Request) -> dict[str, Any]:
    return _oip_metadata(_server(request), name, version)


async def _oip_ready(request: Request, name: str, ref: str | None) -> dict[str, Any]:
    lv, _ = await _server(request).get(name, ref)
    return {"name": name, "version": lv.label, "ready": True}


@oip_router.get("/models/{name}/ready", summary="Model readiness")
async def oip_model_ready(name: str, request: Request) -> dict[str, Any]:
    return await _oip_ready(request, name, None)


@oip_router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def oip_model_version_ready(name: str, version: str, request: Request) -> dict[str, Any]:
    return await _oip_ready(request, name, version)


# The predict paths are answered by serving.fastpath.FastPath before routing; these routes
# document them in OpenAPI and answer the same way where the middleware is not installed.
@oip_router.post("/models/{name}/infer", summary="Predict (Open Inference Protocol)")
async def oip_infer(name: str, request: Request) -> Response:
    t0 = time.perf_counter()
    body = await request.body()
    return _answer(await infer_v2(_server(request), request.scope, body, name, None, t0))


@oip_router.post("/models/{name}/versions/{version}/infer", summary="Predict with a version")
async def oip_infer_version(name: str, version: str, request: Request) -> Response:
    t0 = time.perf_counter()
    body = await request.body()
    return _answer(await infer_v2(_server(request), request.scope, body, name, version, t0))


# ----------------------------------------------------------------- registry and predict (/v1)

v1_router = APIRouter(tags=["models"])
# Writes (register, alias moves) live apart so that a serving-only replica leaves them out.
admin_router = APIRouter(tags=["models"])

_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "rows": {"type": "array", "items": {"type": "object"}},
                        "entities": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "example": {"rows": [{"f0": 1.5, "f1": 3}]},
            }
        },
    }
}


@v1_router.post(
    "/models/{name}/predict",
    summary="Predict with the production alias (or the latest version while none is set)",
    openapi_extra=_PREDICT_DOC,
)
async def predict(name: str, request: Request) -> Response:
    t0 = time.perf_counter()
    body = await request.body()
    return _answer(await predict_v1(_server(request), request.scope, body, name, None, t0))


@v1_router.post(
    "/models/{name}/versions/{ref}/predict",
    summary="Predict with a version number or an alias",
    openapi_extra=_PREDICT_DOC,
)
async def predict_version(name: str, ref: str, request: Request) -> Response:
    t0 = time.perf_counter()
    body = await request.body()
    return _answer(await predict_v1(_server(request), request.scope, body, name, ref, t0))


class ModelList(BaseModel):
    models: list[Any]


class RegisterBody(BaseModel):
    """A new version: the artifact (uploaded, or a path under the server's import roots)."""

    model_config = ConfigDict(extra="forbid")
    artifact_base64: str | None = Field(default=None, description="The artifact's bytes.")
    artifact_path: str | None = Field(
        default=None,
        max_length=4096,
        description="A file under the server's import roots (shared storage).",
    )
    format: str | None = Field(
        default=None, max_length=32, description="xgboost-ubj, xgboost-json, ..."
    )
    signature: Signature
    output_schema: OutputSchema = OutputSchema()
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Lineage()
    input_example: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = Field(default=None, max_length=10_000)
    actor: str | None = Field(default=None, max_length=256)


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1)
    expected_version: int | None = Field(
        default=None,
        description="Move only if the alias is on this version now (null: unset). Omit to "
        "move it regardless.",
    )
    reason: str | None = Field(default=None, max_length=1000)
    actor: str | None = Field(default=None, max_length=256)


class ActorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor: str | None = Field(default=None, max_length=256)


class PromoteIfBetterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = DEFAULT_ALIAS
    metric: str
    direction: str = Field(pattern="^(minimize|maximize)$")
    actor: str | None = Field(default=None, max_length=256)


class History(BaseModel):
    events: list[AliasEvent]


def _actor(body_actor: str | None, request: Request) -> str:
    return body_actor or request.headers.get("x-actor") or "api"


@v1_router.get("/serving/status", summary="What this server has loaded and which aliases it sees")
def serving_status(request: Request) -> dict[str, Any]:
    return _server(request).health()


@v1_router.get("/models", response_model=ModelList, summary="Every model, its versions and aliases")
def list_models(request: Request) -> Any:
    return {"models": _server(request).registry.list_models()}


@v1_router.get("/models/{name}", response_model=ModelDetail, summary="A model in full")
def show_model(name: str, request: Request) -> ModelDetail:
    return _server(request).registry.get_model(name)


@v1_router.get(
    "/models/{name}/versions/{ref}", response_model=ModelVersion, summary="A version or alias"
)
def show_version(name: str, ref: str, request: Request) -> ModelVersion:
    return _server(request).registry.get_version(name, ref)


@admin_router.post(
    "/models/{name}/versions",
    response_model=ModelVersion,
    status_code=201,
    summary="Register a new version",
)
def register(name: str, body: RegisterBody, request: Request) -> ModelVersion:
    import base64
    import binascii

    server = _server(request)
    if (body.artifact_base64 is None) == (body.artifact_path is None):
        raise ValidationError(
            "give exactly one of artifact_base64 and artifact_path", field="artifact_base64"
        )
    artifact: bytes | Path
    if body.artifact_base64 is not None:
        try:
            artifact = base64.b64decode(body.artifact_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError(
                "artifact_base64 is not valid base64", field="artifact_base64"
            ) from None
    else:
        artifact = server.import_path(body.artifact_path or "")
    version = server.registry.register(
        name,
        artifact=artifact,
        format=body.format,
        signature=body.signature,
        output_schema=body.output_schema,
        params=body.params,
        metrics=body.metrics,
        lineage=body.lineage,
        input_example=body.input_example,
        description=body.description,
        actor=_actor(body.actor, request),
    )
    server.after_registry_change()
    return version


@admin_router.put(
    "/models/{name}/aliases/{alias}", response_model=AliasEvent, summary="Move an alias (promote)"
)
def promote(name: str, alias: str, body: PromoteBody, request: Request) -> AliasEvent:
    server = _server(request)
    expected: Any = body.expected_version if "expected_version" in body.model_fields_set else "any"
    event = server.registry.promote(
        name,
        body.version,
        alias,
        actor=_actor(body.actor, request),
        reason=body.reason,
        expected_version=expected,
    )
    server.after_registry_change()
    return event


@admin_router.delete(
    "/models/{name}/aliases/{alias}", response_model=AliasEvent, summary="Remove an alias"
)
def remove_alias(name: str, alias: str, request: Request) -> AliasEvent:
    server = _server(request)
    event = server.registry.remove_alias(name, alias, actor=_actor(None, request))
    server.after_registry_change()
    return event


@admin_router.post(
    "/models/{name}/aliases/{alias}/rollback",
    response_model=AliasEvent,
    summary="Undo the alias's last move",
)
def rollback(name: str, alias: str, request: Request, body: ActorBody | None = None) -> AliasEvent:
    server = _server(request)
    event = server.registry.rollback(
        name, alias, actor=_actor(body.actor if body else None, request)
    )
    server.after_registry_change()
    return event


# Events per history page: a limit outside 1..MAX_HISTORY is a 422 naming ``limit``.
MAX_HISTORY = 1000
HistoryLimit = Annotated[
    int, Query(ge=1, le=MAX_HISTORY, description="Newest events to return, 1-1000.")
]


@v1_router.get("/models/{name}/history", response_model=History, summary="Every alias move")
def history(name: str, request: Request, limit: HistoryLimit = 100) -> History:
    return History(events=_server(request).registry.history(name, limit=limit))


@v1_router.get(
    "/models/{name}/aliases/{alias}/history",
    response_model=History,
    summary="The moves of one alias",
)
def alias_history(name: str, alias: str, request: Request, limit: HistoryLimit = 100) -> History:
    return History(events=_server(request).registry.history(name, alias, limit=limit))


@admin_router.post(
    "/models/{name}/versions/{version}/promote-if-better",
    response_model=PromotionResult,
    summary="Promote only if it beats the alias's holder on a test metric",
)
def promote_if_better(
    name: str,
    request: Request,
    body: PromoteIfBetterBody,
    version: int = PathParam(ge=1, le=2**31 - 1),
) -> PromotionResult:
    server = _server(request)
    result = server.registry.promote_if_better(
        name,
        version,
        body.alias,
        metric=body.metric,
        direction=body.direction,  # type: ignore[arg-type]
        actor=_actor(body.actor, request),
    )
    if result.promoted:
        server.after_registry_change()
    return result
