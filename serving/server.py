"""The model server: loads registered versions, follows alias moves, predicts.

:class:`ModelServer` holds the loaded models and a snapshot of the alias table. A poller thread
re-reads the (small) alias table every ``poll_interval_s``; when an alias moved it loads the new
version (verify the artifact's sha256, load it with the safe loader of its format, check it on the
stored input example) and only then swaps the alias to it. A request holds the loaded version it
started with, and the previous holder of every alias stays loaded, so a move or a rollback never
fails a request in flight and never waits for a load.

The routers (:func:`oip_router`, :func:`v1_router`, :func:`metrics_router`) are thin: they parse,
call the server and shape the JSON. The predict path is deliberately lean (raw body, ``json``,
no pydantic on the way in or out): it is the hot path.

Prediction by entity keys (issue 7): a :class:`FeatureResolver` turns ``{"entities": [...]}``
into feature rows before the same signature check; the feature store plugs one in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

import autotune
from autotune.errors import AutotuneError, UnavailableError, ValidationError
from serving.batching import BatchingConfig, MicroBatcher
from serving.errors import InvalidInputError, ModelNotFoundError
from serving.loaders import LoaderOptions, Predictor, load_predictor
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.registry import DEFAULT_ALIAS, ModelRegistry, check_prediction, parse_ref
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
    "MAX_ROWS",
    "oip_router",
    "v1_router",
    "admin_router",
    "metrics_router",
]

log = logging.getLogger("autotune.serving")
# Rows in one request; bigger inputs belong to a batch job, not an online endpoint.
MAX_ROWS = 10_000
# A version that failed to load (or failed its check) is retried by the poller after this long.
LOAD_RETRY_S = 30.0
# Large requests run in a worker thread so the event loop keeps serving small ones.
INLINE_ROWS = 512


class FeatureResolver(Protocol):
    """Turns entity keys into feature rows for a model (the feature store implements it).

    Called from a worker thread. Returns one ``{feature: value}`` row per entity; the rows then
    pass the same signature check as rows sent directly.
    """

    def resolve(
        self, version: ModelVersion, entities: list[dict[str, Any]]
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ServerConfig:
    """Settings of a model server.

    Args:
        poll_interval_s: how often the alias table is re-read (alias moves show up this fast).
        batching: micro-batching settings.
        loader: loader options (skops trusted types, XGBoost threads).
        log_sample_rate: fraction of predictions logged (with inputs, outputs and request id) to
            the ``autotune.serving.predictions`` logger.
        max_loaded: versions kept loaded beyond the alias holders and their predecessors.
        preload: load every alias holder at start (ready only when done).
        import_roots: directories the REST ``register`` may read ``artifact_path`` from.
        predict_threads: worker threads for model calls.
    """

    poll_interval_s: float = 1.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    log_sample_rate: float = 0.0
    max_loaded: int = 8
    preload: bool = True
    import_roots: tuple[str, ...] = ("autotune-artifacts",)
    predict_threads: int = 2


class PredictionLogger:
    """Logs a sample of predictions as JSON lines, each with its request id."""

    def __init__(self, sample_rate: float, logger: logging.Logger | None = None) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"log_sample_rate must be in [0, 1], got {sample_rate}")
        self.sample_rate = sample_rate
        self.logger = logger or logging.getLogger("autotune.serving.predictions")

    def maybe_log(
        self, *, request_id: str, lv: LoadedVersion, alias: str | None, x: np.ndarray,
        y: np.ndarray, seconds: float,
    ) -> None:  # fmt: skip
        if self.sample_rate <= 0.0 or random.random() >= self.sample_rate:
            return
        self.logger.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "model": lv.version.name,
                    "version": lv.version.version,
                    "alias": alias,
                    "rows": int(x.shape[0]),
                    "inputs": x[:10].tolist(),
                    "outputs": y[:10].tolist(),
                    "latency_ms": round(seconds * 1000, 3),
                    "time": time.time(),
                }
            )
        )


class LoadedVersion:
    """A version ready to predict: its record, its predictor and (optionally) its batcher."""

    def __init__(
        self, version: ModelVersion, predictor: Predictor, batcher: MicroBatcher | None
    ) -> None:
        self.version = version
        self.predictor = predictor
        self.batcher = batcher
        self.last_used = time.monotonic()
        self.label = str(version.version)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        self.last_used = time.monotonic()
        if self.batcher is not None and x.shape[0] < self.batcher.config.max_batch_size:
            return await self.batcher.predict(x)
        if x.shape[0] <= INLINE_ROWS:
            return self.predictor.predict(x)
        return await asyncio.to_thread(self.predictor.predict, x)


class ModelServer:
    """Serves the versions of a :class:`ModelRegistry`. Thread-safe.

    Args:
        registry: the registry (its database and artifact store).
        config: server settings.
        resolver: optional entity -> features resolver (the feature store).
        metrics: where to count (default: a fresh :class:`ServingMetrics`).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        config: ServerConfig | None = None,
        *,
        resolver: FeatureResolver | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or ServerConfig()
        self.resolver = resolver
        self.metrics = metrics or ServingMetrics()
        self.prediction_log = PredictionLogger(self.config.log_sample_rate)
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.predict_threads, thread_name_prefix="predict"
        )
        # Published snapshots: replaced whole (never mutated), so readers need no lock.
        self._aliases: dict[tuple[str, str], int] = {}
        self._latest: dict[str, int] = {}
        self._in_registry: frozenset[tuple[str, str]] = frozenset()  # aliases, loaded or not
        self._previous: dict[tuple[str, str], int] = {}
        self._loaded: dict[tuple[str, int], LoadedVersion] = {}
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._load_locks: dict[tuple[str, int], threading.Lock] = {}
        self._failed: dict[tuple[str, int], float] = {}  # versions that failed to load, when
        self._guard = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._poller: threading.Thread | None = None
        self.ready = False
        self.last_poll_error: str | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Read the alias table (and preload its versions), then poll it in the background."""
        if self._poller is not None:
            return
        try:
            self.refresh()
        except Exception as e:  # not ready yet; the poller keeps trying
            self.last_poll_error = f"{type(e).__name__}: {e}"
            log.warning("initial registry read failed: %s", e)
        self._poller = threading.Thread(target=self._poll, name="alias-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.config.poll_interval_s)
            self._poke.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                self.last_poll_error = None
            except Exception as e:  # keep serving what is loaded; say why in /v2/health/ready
                self.last_poll_error = f"{type(e).__name__}: {e}"
                log.warning("alias poll failed: %s", e)

    def refresh(self) -> None:
        """Re-read the alias table; load what newly holds an alias, then publish the swap."""
        with self._refresh_lock:
            table, latest = self.registry.serving_snapshot()
            current = self._aliases
            aliases = dict(current)
            previous = dict(self._previous)
            for key, version in table.items():
                if current.get(key) == version:
                    continue
                name = key[0]
                if self.config.preload or (name, current.get(key, -1)) in self._loaded:
                    failed_at = self._failed.get((name, version))
                    if failed_at is not None and time.monotonic() - failed_at < LOAD_RETRY_S:
                        continue
                    try:
                        self._load(name, version)
                    except AutotuneError as e:
                        # Keep serving the old holder; try this version again in a while.
                        self._failed[(name, version)] = time.monotonic()
                        log.error("not swapping %s:%s to v%s: %s", name, key[1], version, e)
                        continue
                    self._failed.pop((name, version), None)
                if key in current:
                    previous[key] = current[key]
                aliases[key] = version
            for key in set(aliases) - set(table):
                del aliases[key]
            self._aliases = aliases
            self._in_registry = frozenset(table)
            self._latest = latest
            self._previous = previous
            self.ready = True
            self._evict()

    def _evict(self) -> None:
        keep = {(n, v) for (n, _a), v in self._aliases.items()}
        keep |= {(n, v) for (n, _a), v in self._previous.items()}
        with self._guard:
            others = sorted(
                (k for k in self._loaded if k not in keep),
                key=lambda k: self._loaded[k].last_used,
                reverse=True,
            )
            drop = set(others[self.config.max_loaded :])
            if drop:
                # Requests holding one finish normally; it is only dropped from the (new) map.
                self._loaded = {k: v for k, v in self._loaded.items() if k not in drop}

    # -------------------------------------------------------------------------------- loading

    def _version(self, name: str, version: int) -> ModelVersion:
        key = (name, version)
        mv = self._versions.get(key)
        if mv is None:
            mv = self.registry.get_version(name, version)
            self._versions[key] = mv  # versions are immutable: cache forever
        return mv

    def _load(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        lv = self._loaded.get(key)
        if lv is not None:
            return lv
        with self._guard:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            lv = self._loaded.get(key)
            if lv is not None:
                return lv
            try:
                mv = self._version(name, version)
                data = self.registry.store.get(mv.artifact)
                predictor = load_predictor(data, mv, self.config.loader)
                if mv.input_example:
                    check_prediction(predictor, mv)
            except AutotuneError:
                self.metrics.model_loaded(model=name, version=str(version), ok=False)
                raise
            batcher = None
            if self.config.batching.enabled:
                label = str(version)

                def on_batch(rows: int, _n: str = name, _v: str = label) -> None:
                    self.metrics.observe_batch(model=_n, version=_v, rows=rows)

                batcher = MicroBatcher(
                    predictor.predict,
                    self.config.batching,
                    executor=self._executor,
                    on_batch=on_batch,
                    name=f"{name} v{version}",
                )
            lv = LoadedVersion(mv, predictor, batcher)
            with self._guard:
                self._loaded = {**self._loaded, key: lv}
            self.metrics.model_loaded(model=name, version=str(version), ok=True)
            log.info("loaded %s v%s (%s)", name, version, mv.artifact.format)
            return lv

    # ------------------------------------------------------------------------------ resolving

    def resolve(self, name: str, ref: int | str | None) -> tuple[int, str | None] | None:
        """(version, alias) from the in-memory snapshot, or None when it does not know."""
        r = parse_ref(ref) if ref is not None else None
        if isinstance(r, int):
            return r, None
        alias = r or DEFAULT_ALIAS
        v = self._aliases.get((name, alias))
        if v is not None:
            return v, alias
        if r is None and name in self._latest and (name, DEFAULT_ALIAS) not in self._in_registry:
            return self._latest[name], None
        return None

    async def get(self, name: str, ref: int | str | None) -> tuple[LoadedVersion, str | None]:
        """The loaded version that ``ref`` names (loading it in a thread if needed)."""
        hit = self.resolve(name, ref)
        if hit is None:  # not in the snapshot: maybe created since the last poll
            hit = await asyncio.to_thread(self.registry.resolve, name, ref)
        version, alias = hit
        lv = self._loaded.get((name, version))
        if lv is None:
            lv = await asyncio.to_thread(self._load, name, version)
        return lv, alias

    async def features_to_matrix(self, lv: LoadedVersion, payload: Any) -> np.ndarray:
        """Validate ``{"rows": [...]}`` or ``{"entities": [...]}`` into the model's matrix.

        Entities go through the feature resolver first, then the same signature check.
        """
        if not isinstance(payload, dict):
            raise InvalidInputError(
                'the body must be an object {"rows": [{feature: value}, ...]}', field="body"
            )
        keys = payload.keys() - {"id", "parameters"}
        if keys == {"rows"}:
            rows = payload["rows"]
        elif keys == {"entities"}:
            rows = await self._resolve_entities(lv, payload["entities"])
        else:
            raise InvalidInputError(
                'the body must have exactly one of "rows" (feature values) or "entities" '
                f"(entity keys), got {sorted(keys)}",
                field="body",
            )
        if isinstance(rows, list) and len(rows) > MAX_ROWS:
            raise InvalidInputError(
                f"{len(rows)} rows in one request; at most {MAX_ROWS}", field="rows"
            )
        return lv.version.signature.to_matrix(rows)

    async def _resolve_entities(self, lv: LoadedVersion, entities: Any) -> Any:
        if self.resolver is None:
            raise ValidationError(
                "this server has no feature store attached: send feature values as "
                '{"rows": [...]} instead of entity keys',
                field="entities",
            )
        if not isinstance(entities, list) or not entities:
            raise InvalidInputError(
                "entities must be a non-empty list of {key: value}", field="entities"
            )
        return await asyncio.to_thread(self.resolver.resolve, lv.version, entities)

    # --------------------------------------------------------------------------- alias moves

    def after_registry_change(self) -> None:
        """Pick up a registration or alias move made through this server at once (other
        servers see it within a poll)."""
        self.refresh()

    def import_path(self, path: str) -> Path:
        """``path`` if it lies under one of ``config.import_roots``, else a ValidationError."""
        p = Path(path).resolve()
        for root in self.config.import_roots:
            r = Path(root).resolve()
            if p == r or r in p.parents:
                return p
        raise ValidationError(
            f"artifact_path {path!r} is outside the directories this server imports from "
            f"({list(self.config.import_roots)}); upload the bytes as artifact_base64 instead",
            field="artifact_path",
        )

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "loaded": sorted(f"{n}:{v}" for n, v in list(self._loaded)),
            "aliases": {f"{n}:{a}": v for (n, a), v in sorted(self._aliases.items())},
            "last_poll_error": self.last_poll_error,
            "failed_loads": sorted(f"{n}:{v}" for n, v in list(self._failed)),
        }


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


@metrics_router.get("/metrics", summary="Prometheus metrics of the model server")
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
