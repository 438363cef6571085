"""The model server's HTTP face: the Open Inference Protocol (/v2), AutoTune's model routes
(/v1) and /metrics, over a :class:`serving.runtime.ModelServer`.

The routers are thin: they parse, call the server and shape the JSON. The predict paths are
deliberately lean (raw body, ``json``, no pydantic on the way in or out, plain Starlette routes
matched first): they are the hot path. Registration and alias moves live on ``admin_router`` so
a serving-only replica can leave them out.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

import autotune
from autotune.errors import AutotuneError, UnavailableError, ValidationError
from serving.errors import InvalidInputError, ModelNotFoundError
from serving.metrics import CONTENT_TYPE
from serving.registry import DEFAULT_ALIAS
from serving.runtime import (
    MAX_ROWS,
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


def new_request_id(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Request-ID`` when sane, else a fresh one."""
    rid = headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return uuid.uuid4().hex


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(f"the body is not valid JSON: {e}", field="body") from None


def _server(request: Request) -> ModelServer:
    return request.app.state.model_server


def _error_response(e: AutotuneError, rid: str) -> JSONResponse:
    headers = {"x-request-id": rid}
    if e.retryable:
        headers["retry-after"] = "1"
    return JSONResponse(e.to_payload(), status_code=e.status, headers=headers)


class _Call:
    """Labels of one prediction call, filled in as it resolves, counted when it ends."""

    __slots__ = ("server", "name", "endpoint", "version", "alias", "rows", "t0", "rid")

    def __init__(self, server: ModelServer, name: str, endpoint: str, request: Request) -> None:
        self.server = server
        # An unknown name is counted under one label: clients cannot grow the label set.
        self.name = name if name in server._latest else "<unknown>"
        self.endpoint = endpoint
        self.version = ""
        self.alias = ""
        self.rows = 0
        self.t0 = time.perf_counter()
        self.rid = new_request_id(request.headers)

    def resolved(self, lv: LoadedVersion, alias: str | None) -> None:
        self.name, self.version, self.alias = lv.version.name, lv.label, alias or ""

    def done(self, code: int) -> float:
        seconds = time.perf_counter() - self.t0
        self.server.metrics.observe_request(
            model=self.name,
            version=self.version,
            alias=self.alias,
            endpoint=self.endpoint,
            code=code,
            seconds=seconds,
            rows=self.rows if code < 400 else 0,
        )
        return seconds


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
_NUMERIC_OIP = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64"}  # fmt: skip


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


def _oip_matrix(signature: Signature, inputs: Any) -> np.ndarray:
    """OIP input tensors -> (n_rows, n_features): one tensor per feature (named by it), or one
    (n_rows, n_features) tensor holding the features in signature order."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("inputs must be a non-empty list of tensors", field="inputs")
    names = signature.names
    tensors: dict[str, list[Any]] = {}
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not {"name", "shape", "datatype", "data"} <= t.keys():
            raise InvalidInputError(
                f"inputs[{i}] must have name, shape, datatype and data", field=f"inputs.{i}"
            )
        shape, data = t["shape"], t["data"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInputError(
                f"inputs[{i}].shape must be a list of sizes", field=f"inputs.{i}.shape"
            )
        flat = _flatten(data)
        if flat is None or len(flat) != int(np.prod(shape)):
            raise InvalidInputError(
                f"inputs[{i}].data must be a list of {int(np.prod(shape))} values (shape {shape})",
                field=f"inputs.{i}.data",
            )
        if (
            len(inputs) == 1
            and t["name"] not in names
            and len(shape) == 2
            and shape[1] == len(names)
        ):
            if t["datatype"] not in _NUMERIC_OIP:
                raise InvalidInputError(
                    f"inputs[0].datatype {t['datatype']!r} is not numeric",
                    field="inputs.0.datatype",
                )
            if not all(type(v) in (int, float, bool) for v in flat):
                raise InvalidInputError(
                    "inputs[0].data must hold numbers only", field="inputs.0.data"
                )
            if shape[0] == 0 or shape[0] > MAX_ROWS:
                raise InvalidInputError(f"1 to {MAX_ROWS} rows per request", field="inputs.0.shape")
            return np.asarray(flat, dtype=np.float32).reshape(shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInputError(
                f"inputs[{i}] ({t['name']!r}) must have shape [n] or [n, 1], or be a single "
                f"[n, {len(names)}] tensor with the features {names} in order",
                field=f"inputs.{i}.shape",
            )
        tensors[str(t["name"])] = flat
    return signature.columns_to_matrix(tensors, field="inputs")


def _flatten(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for d in data:
        sub = _flatten(d)
        if sub is None:
            return None
        out.extend(sub)
    return out


_OUT_TYPES = {
    "f": {4: "FP32", 8: "FP64", 2: "FP16"},
    "i": {8: "INT64", 4: "INT32"},
    "b": {1: "BOOL"},
}


async def _oip_infer(request: Request, name: str, ref: str | None) -> Response:
    server = _server(request)
    call = _Call(server, name, "v2_infer", request)
    try:
        payload = _parse_json(await request.body())
        if not isinstance(payload, dict):
            raise InvalidInputError('the body must be an object {"inputs": [...]}', field="body")
        lv, alias = await server.get(name, ref)
        call.resolved(lv, alias)
        x = _oip_matrix(lv.version.signature, payload.get("inputs"))
        call.rows = x.shape[0]
        y = await lv.predict(x)
    except AutotuneError as e:
        call.done(e.status)
        return _error_response(e, call.rid)
    except BaseException:
        call.done(500)
        raise
    seconds = call.done(200)
    server.prediction_log.maybe_log(
        request_id=call.rid, lv=lv, alias=alias, x=x, y=y, seconds=seconds
    )
    dtype = _OUT_TYPES.get(y.dtype.kind, {}).get(y.dtype.itemsize, "FP64")
    body = {
        "model_name": name,
        "model_version": lv.label,
        "id": str(payload.get("id") or call.rid),
        "parameters": {"alias": alias, "request_id": call.rid},
        "outputs": [
            {
                "name": lv.version.output_schema.name,
                "shape": list(y.shape),
                "datatype": dtype,
                "data": y.ravel().tolist(),
            }
        ],
    }
    return Response(_dumps(body), media_type="application/json", headers={"x-request-id": call.rid})


async def _oip_infer_fast(request: Request) -> Response:
    p = request.path_params
    return await _oip_infer(request, p["name"], p.get("version"))


# The hot paths are plain Starlette routes (no dependency solving, no pydantic): they match
# first. The FastAPI routes of the same paths below only document them in OpenAPI.
oip_router.add_route("/models/{name}/infer", _oip_infer_fast, methods=["POST"],
                     include_in_schema=False)  # fmt: skip
oip_router.add_route("/models/{name}/versions/{version}/infer", _oip_infer_fast,
                     methods=["POST"], include_in_schema=False)  # fmt: skip


@oip_router.post("/models/{name}/infer", summary="Predict (Open Inference Protocol)")
async def oip_infer(name: str, request: Request) -> Response:
    return await _oip_infer(request, name, None)


@oip_router.post("/models/{name}/versions/{version}/infer", summary="Predict with a version")
async def oip_infer_version(name: str, version: str, request: Request) -> Response:
    return await _oip_infer(request, name, version)


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


async def _v1_predict(request: Request, name: str, ref: str | None) -> Response:
    server = _server(request)
    call = _Call(server, name, "v1_predict", request)
    try:
        payload = _parse_json(await request.body())
        lv, alias = await server.get(name, ref)
        call.resolved(lv, alias)
        x = await server.features_to_matrix(lv, payload)
        call.rows = x.shape[0]
        y = await lv.predict(x)
    except AutotuneError as e:
        call.done(e.status)
        return _error_response(e, call.rid)
    except BaseException:
        call.done(500)
        raise
    seconds = call.done(200)
    server.prediction_log.maybe_log(
        request_id=call.rid, lv=lv, alias=alias, x=x, y=y, seconds=seconds
    )
    body = {
        "model": name,
        "version": lv.version.version,
        "alias": alias,
        "predictions": y.tolist(),
        "request_id": call.rid,
    }
    return Response(_dumps(body), media_type="application/json", headers={"x-request-id": call.rid})


async def _v1_predict_fast(request: Request) -> Response:
    p = request.path_params
    return await _v1_predict(request, p["name"], p.get("ref"))


# Hot paths as plain Starlette routes, matched first; the FastAPI twins below document them.
v1_router.add_route("/models/{name}/predict", _v1_predict_fast, methods=["POST"],
                    include_in_schema=False)  # fmt: skip
v1_router.add_route("/models/{name}/versions/{ref}/predict", _v1_predict_fast, methods=["POST"],
                    include_in_schema=False)  # fmt: skip


@v1_router.post(
    "/models/{name}/predict",
    summary="Predict with the production alias (or the latest version while none is set)",
    openapi_extra=_PREDICT_DOC,
)
async def predict(name: str, request: Request) -> Response:
    return await _v1_predict(request, name, None)


@v1_router.post(
    "/models/{name}/versions/{ref}/predict",
    summary="Predict with a version number or an alias",
    openapi_extra=_PREDICT_DOC,
)
async def predict_version(name: str, ref: str, request: Request) -> Response:
    return await _v1_predict(request, name, ref)


class ModelList(BaseModel):
    models: list[Any]


class RegisterBody(BaseModel):
    """A new version: the artifact (uploaded, or a path under the server's import roots)."""

    model_config = ConfigDict(extra="forbid")
    artifact_base64: str | None = Field(default=None, description="The artifact's bytes.")
    artifact_path: str | None = Field(
        default=None, description="A file under the server's import roots (shared storage)."
    )
    format: str | None = Field(default=None, description="xgboost-ubj, xgboost-json, ...")
    signature: Signature
    output_schema: OutputSchema = OutputSchema()
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Lineage()
    input_example: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None
    actor: str | None = None


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


@v1_router.get("/models/{name}/history", response_model=History, summary="Every alias move")
def history(name: str, request: Request, limit: int = 100) -> History:
    return History(events=_server(request).registry.history(name, limit=min(max(limit, 1), 1000)))


@v1_router.get(
    "/models/{name}/aliases/{alias}/history",
    response_model=History,
    summary="The moves of one alias",
)
def alias_history(name: str, alias: str, request: Request, limit: int = 100) -> History:
    reg = _server(request).registry
    return History(events=reg.history(name, alias, limit=min(max(limit, 1), 1000)))


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
