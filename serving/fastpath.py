"""The hot path: ``POST`` predict and infer requests answered before FastAPI routing.

:class:`FastPath` is a pure ASGI middleware that :func:`serving.app.install_serving` places
innermost among the app's middleware, in front of routing. It recognises the four prediction
paths by splitting the path string, reads the body, parses it with orjson, checks it against
the model's signature with the check precompiled for that model
(:meth:`LoadedVersion.rows_to_matrix`), calls the model (through the micro-batcher), counts the
request on pre-bound metric series and writes an orjson response: no routing table walk, no
dependency solving, no pydantic model per request. Any other request goes on to the app
untouched.

A :class:`FrontDoor` at the top of the app's middleware stack hands it the prediction requests
without crossing the layers in between: it runs those layers' checks itself (body size and
rate: :meth:`autotune.api.limits.LimitsMiddleware.check`; API keys and projects:
:meth:`autotune.auth.AuthMiddleware.check`), in the same order and on the same state, inside
copies of the same exception wrappers (an unexpected error is the app's JSON 500, never a
traceback). Where the stack holds a layer it does not know, it stays shut and predictions cross
every layer as before. Measured in-process, the layers above FastPath cost about 7 us of CPU per
request, 5 of them FastAPI's per-request telemetry check (which :class:`serving.app.ServingApp`
skips for predictions); 2-3.5 us remain.

Under :class:`serving.httpproto.PredictHttpToolsProtocol` a prediction does not even become an
ASGI request: :meth:`FrontDoor.answer_now` runs the same checks and :func:`_prepare_now` /
:func:`_answer_now` the same steps as :func:`_answer` with plain calls, the micro-batcher's
future calling back with the answer. Whatever would have to wait (an API key not in the cache, a version still to load,
entities to look up, an authorization hook) is left, untouched, to the ASGI way.

The FastAPI routes of the same paths (``serving.server``) stay declared: they document the
endpoints in OpenAPI and answer through the same :func:`predict_v1` / :func:`infer_v2` when the
middleware is not installed, so both ways give the same bytes and the same errors.

Authorization hook: ``ModelServer.authorize`` (``None`` by default: no check) is called with the
ASGI scope and the model name before anything else is read; it raises an ``AutotuneError``
(401/403) to refuse, and may return an awaitable.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from starlette.middleware.errors import ServerErrorMiddleware

from autotune.api.limits import BodyLimit, LimitsMiddleware
from autotune.auth import AuthMiddleware
from autotune.errors import AutotuneError, Refusal, ValidationError, send_refusal
from autotune.projects import current_project
from serving.errors import InvalidInputError
from serving.runtime import MAX_ROWS, LoadedVersion, ModelServer
from serving.schemas import Signature

__all__ = [
    "FastPath",
    "FrontDoor",
    "front_door",
    "predict_v1",
    "infer_v2",
    "request_id",
    "oip_matrix",
]

# Where uvicorn logs an application's errors (the ASGI way's log, kept by answer_now).
_server_log = logging.getLogger("uvicorn.error")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
# (status, body, extra headers) of one answered prediction request.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]

_JSON = (b"content-type", b"application/json")
_RETRY = (b"retry-after", b"1")
_PREDICT = "/predict"
_INFER = "/infer"


# Fresh request ids: a random per-process prefix and a counter (unique across replicas without
# a system call per request).
_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count()


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` when sane (printable, at most 128 characters), else a
    fresh one (32 hex digits)."""
    for k, v in headers:
        if k == b"x-request-id":
            rid = v.decode("latin-1")
            if rid and len(rid) <= 128 and rid.isprintable():
                return rid
            break
    return f"{_RID_PREFIX}{next(_rid_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValidationError(f"the body is not valid JSON: {e}", field="body") from None


def _parse_object(body: bytes) -> dict[str, Any]:
    payload = _parse(body)
    if not isinstance(payload, dict):
        raise InvalidInputError('the body must be an object {"inputs": [...]}', field="body")
    return payload


def _http(answer: Answer) -> Refusal:
    """(status, headers, body) of an answer, with its content type and length."""
    status, out, headers = answer
    headers.append(_JSON)
    headers.append((b"content-length", str(len(out)).encode()))
    return status, headers, out


def _error(e: AutotuneError, rid: str) -> Answer:
    headers = [(b"x-request-id", rid.encode("latin-1"))]
    if e.retryable:
        headers.append(_RETRY)
    return e.status, orjson.dumps(e.to_payload()), headers


async def _resolve(server: ModelServer, name: str, ref: str | None) -> tuple[LoadedVersion, Any]:
    hit = server.lookup(name, ref)  # in memory: the common case, no await
    if hit is not None:
        return hit
    return await server.get(name, ref)


async def _authorize(server: ModelServer, scope: dict[str, Any], name: str) -> None:
    if server.authorize is not None:
        pending = server.authorize(scope, name)
        if pending is not None:
            await pending


class _Endpoint:
    """One prediction endpoint's own input and output shapes; :func:`_answer` and
    :func:`_answer_now` do the rest, alike for every endpoint."""

    label = ""  # the endpoint's metric label

    def parse(self, body: bytes) -> Any:
        return _parse(body)

    def matrix_now(self, lv: LoadedVersion, payload: Any) -> np.ndarray | None:
        """The (n_rows, n_features) matrix of ``payload``, or None when only :meth:`matrix`
        can make it (it needs to wait: feature lookups)."""
        raise NotImplementedError

    async def matrix(self, server: ModelServer, lv: LoadedVersion, payload: Any) -> np.ndarray:
        x = self.matrix_now(lv, payload)
        assert x is not None
        return x

    def render(
        self, name: str, lv: LoadedVersion, alias: Any, payload: Any, y: np.ndarray, rid: str
    ) -> dict[str, Any]:
        raise NotImplementedError


class _PredictV1(_Endpoint):
    label = "v1_predict"

    def matrix_now(self, lv: LoadedVersion, payload: Any) -> np.ndarray | None:
        if type(payload) is dict and len(payload) == 1 and "rows" in payload:
            rows = payload["rows"]
            if type(rows) is list and len(rows) > MAX_ROWS:
                raise InvalidInputError(
                    f"{len(rows)} rows in one request; at most {MAX_ROWS}", field="rows"
                )
            return lv.rows_to_matrix(rows)
        return None  # entities, or a malformed body: the general path explains

    async def matrix(self, server: ModelServer, lv: LoadedVersion, payload: Any) -> np.ndarray:
        x = self.matrix_now(lv, payload)
        return x if x is not None else await server.features_to_matrix(lv, payload)

    def render(
        self, name: str, lv: LoadedVersion, alias: Any, payload: Any, y: np.ndarray, rid: str
    ) -> dict[str, Any]:
        return {
            "model": name,
            "version": lv.number,
            "alias": alias,
            "predictions": y.tolist(),
            "request_id": rid,
        }


class _InferV2(_Endpoint):
    label = "v2_infer"

    def parse(self, body: bytes) -> Any:
        return _parse_object(body)

    def matrix_now(self, lv: LoadedVersion, payload: Any) -> np.ndarray | None:
        return oip_matrix(lv.version.signature, payload.get("inputs"))

    def render(
        self, name: str, lv: LoadedVersion, alias: Any, payload: Any, y: np.ndarray, rid: str
    ) -> dict[str, Any]:
        dtype = _OUT_TYPES.get(y.dtype.kind, {}).get(y.dtype.itemsize, "FP64")
        return {
            "model_name": name,
            "model_version": lv.label,
            "id": str(payload.get("id") or rid),
            "parameters": {"alias": alias, "request_id": rid},
            "outputs": [
                {
                    "name": lv.version.output_schema.name,
                    "shape": list(y.shape),
                    "datatype": dtype,
                    "data": y.ravel().tolist(),
                }
            ],
        }


_V1 = _PredictV1()
_V2 = _InferV2()


def _failed(
    server: ModelServer, name: str, lv: LoadedVersion | None, alias: Any, ep: _Endpoint,
    t0: float, e: AutotuneError, rid: str,
) -> Answer:  # fmt: skip
    server.observe_failure(name, lv, alias, ep.label, e.status, time.perf_counter() - t0)
    return _error(e, rid)


def _done(
    server: ModelServer, name: str, lv: LoadedVersion, alias: Any, ep: _Endpoint, t0: float,
    payload: Any, x: np.ndarray, y: np.ndarray, rid: str,
) -> Answer:  # fmt: skip
    """Count a successful request, log a sample, render its answer."""
    seconds = time.perf_counter() - t0
    lv.series(alias, ep.label).ok(seconds, x.shape[0])
    if server.prediction_log.sample_rate > 0.0:
        server.prediction_log.maybe_log(
            request_id=rid, lv=lv, alias=alias, x=x, y=y, seconds=seconds
        )
    out = orjson.dumps(ep.render(name, lv, alias, payload, y, rid))
    return 200, out, [(b"x-request-id", rid.encode("latin-1"))]


async def _answer(
    server: ModelServer, scope: dict[str, Any], body: bytes, name: str, ref: str | None,
    t0: float, ep: _Endpoint,
) -> Answer:  # fmt: skip
    """What every prediction endpoint does around its own shapes: authorize, parse the body,
    resolve the version, make the matrix, predict, count the request on the endpoint's metric
    series (failures too), log a sample and render the answer."""
    rid = request_id(scope["headers"])
    lv: LoadedVersion | None = None
    alias = None
    try:
        await _authorize(server, scope, name)
        payload = ep.parse(body)
        lv, alias = await _resolve(server, name, ref)
        x = await ep.matrix(server, lv, payload)
        y = await lv.predict(x)
    except AutotuneError as e:
        return _failed(server, name, lv, alias, ep, t0, e, rid)
    except BaseException:
        server.observe_failure(name, lv, alias, ep.label, 500, time.perf_counter() - t0)
        raise
    return _done(server, name, lv, alias, ep, t0, payload, x, y, rid)


# What _prepare_now found: (version, alias, payload, matrix, error to answer with). The error
# (an AutotuneError or an unexpected one) is answered only after the limit checks, as the ASGI
# way would: a request over its rate gets the 429 whatever else is wrong with it.
Prepared = tuple[LoadedVersion | None, Any, Any, "np.ndarray | None", "Exception | None"]


def _prepare_now(
    server: ModelServer, body: bytes, name: str, ref: str | None, ep: _Endpoint
) -> Prepared | None:
    """The steps of :func:`_answer` before the model call, without a coroutine: parse, resolve
    from memory, make the matrix. None when one of them would have to wait (an authorization
    hook, a version not loaded yet, entities to look up): then only :func:`_answer` can answer,
    and nothing was counted. An error is kept in the result, not answered."""
    if server.authorize is not None:
        return None
    lv: LoadedVersion | None = None
    alias = payload = None
    try:
        payload = ep.parse(body)
        hit = server.lookup(name, ref)
        if hit is None:
            return None
        lv, alias = hit
        x = ep.matrix_now(lv, payload)
        if x is None:
            return None
    except Exception as e:
        return lv, alias, payload, None, e
    return lv, alias, payload, x, None


def _answer_now(
    server: ModelServer, scope: dict[str, Any], name: str, t0: float, ep: _Endpoint,
    prepared: Prepared, respond: Callable[[Refusal], None],
    crash: Callable[[dict[str, Any], BaseException, Callable[[Refusal], None]], None],
) -> None:  # fmt: skip
    """Finish what :func:`_prepare_now` began, from a running event loop: ``respond`` gets the
    answer's (status, headers, body), now or once the (micro-batched) model call is done; an
    unexpected error goes to ``crash(scope, error, respond)`` instead. Counted as
    :func:`_answer` counts."""
    rid = request_id(scope["headers"])
    lv, alias, payload, x, error = prepared
    y: Any = None
    if error is None:
        assert lv is not None and x is not None
        try:
            y = lv.predict_soon(x)
        except Exception as e:
            error = e
    if error is not None:
        if isinstance(error, AutotuneError):
            respond(_http(_failed(server, name, lv, alias, ep, t0, error, rid)))
        else:
            server.observe_failure(name, lv, alias, ep.label, 500, time.perf_counter() - t0)
            crash(scope, error, respond)
        return
    assert lv is not None and x is not None
    if not isinstance(y, asyncio.Future):
        respond(_http(_done(server, name, lv, alias, ep, t0, payload, x, y, rid)))
        return

    def finished(f: asyncio.Future[np.ndarray]) -> None:
        assert lv is not None and x is not None
        try:
            answer = _done(server, name, lv, alias, ep, t0, payload, x, f.result(), rid)
        except AutotuneError as e:
            answer = _failed(server, name, lv, alias, ep, t0, e, rid)
        except BaseException as e:  # the model failed, or the request was cancelled
            server.observe_failure(name, lv, alias, ep.label, 500, time.perf_counter() - t0)
            crash(scope, e, respond)
            return
        respond(_http(answer))

    y.add_done_callback(finished)


async def predict_v1(
    server: ModelServer, scope: dict[str, Any], body: bytes, name: str, ref: str | None,
    t0: float,
) -> Answer:  # fmt: skip
    """Answer ``POST /v1/models/{name}[/versions/{ref}]/predict`` with ``body``.

    Args:
        server: the model server.
        scope: the request's ASGI scope (headers, for the request id and authorization).
        body: the request body (``{"rows": [...]}`` or ``{"entities": [...]}``).
        name: the model; ``ref``: a version number, an alias, or ``None`` (production).
        t0: ``time.perf_counter()`` when the request arrived (the latency metric).
    """
    return await _answer(server, scope, body, name, ref, t0, _V1)


async def infer_v2(
    server: ModelServer, scope: dict[str, Any], body: bytes, name: str, ref: str | None,
    t0: float,
) -> Answer:  # fmt: skip
    """Answer ``POST /v2/models/{name}[/versions/{ref}]/infer`` (Open Inference Protocol)."""
    return await _answer(server, scope, body, name, ref, t0, _V2)


_OIP_NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64"}  # fmt: skip
_OUT_TYPES = {
    "f": {4: "FP32", 8: "FP64", 2: "FP16"},
    "i": {8: "INT64", 4: "INT32"},
    "b": {1: "BOOL"},
}


def oip_matrix(signature: Signature, inputs: Any) -> np.ndarray:
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
        size = 1
        for d in shape:
            size *= d
        flat = _flatten(data)
        if flat is None or len(flat) != size:
            raise InvalidInputError(
                f"inputs[{i}].data must be a list of {size} values (shape {shape})",
                field=f"inputs.{i}.data",
            )
        if (
            len(inputs) == 1
            and t["name"] not in names
            and len(shape) == 2
            and shape[1] == len(names)
        ):
            if t["datatype"] not in _OIP_NUMERIC:
                raise InvalidInputError(
                    f"inputs[0].datatype {t['datatype']!r} is not numeric",
                    field="inputs.0.datatype",
                )
            if not set(map(type, flat)) <= {int, float, bool}:
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


class FastPath:
    """Pure ASGI middleware answering the prediction ``POST`` paths itself.

    Args:
        app: the app behind it (everything else goes there).
        server: the model server.
        v1_prefix: where the /v1 model routes are mounted.
    """

    def __init__(self, app: ASGIApp, server: ModelServer, v1_prefix: str = "/v1") -> None:
        self.app = app
        self.server = server
        self._v1 = v1_prefix.rstrip("/") + "/models/"
        self._v2 = "/v2/models/"

    def match(self, path: str) -> tuple[Any, str, str | None] | None:
        """(endpoint, name, ref) of a prediction path, else None. Path parameters match one
        non-empty segment each, as the routes' ``{name}`` and ``{ref}`` do."""
        if path.endswith(_PREDICT) and path.startswith(self._v1):
            handler: Any = _V1
            parts = path[len(self._v1) : -len(_PREDICT)].split("/")
        elif path.endswith(_INFER) and path.startswith(self._v2):
            handler = _V2
            parts = path[len(self._v2) : -len(_INFER)].split("/")
        else:
            return None
        if len(parts) == 1 and parts[0]:
            return handler, parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return handler, parts[0], parts[2]
        return None

    def hit(self, scope: dict[str, Any]) -> tuple[Any, str, str | None] | None:
        """:meth:`match` of an HTTP request's path (under the app's ``root_path``), if a POST."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        return self.match(path)

    async def answer(
        self, scope: dict[str, Any], receive: Any, send: Any, hit: tuple[Any, str, str | None]
    ) -> None:
        """Read the body of a matched request, answer it and send the answer."""
        t0 = time.perf_counter()
        handler, name, ref = hit
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body", False):
            chunks = [body]
            while message.get("more_body", False):
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
            body = b"".join(chunks)
        elif message["type"] != "http.request":
            return
        status, headers, out = _http(
            await _answer(self.server, scope, body, name, ref, t0, handler)
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def prepare_now(
        self, body: bytes, hit: tuple[Any, str, str | None]
    ) -> tuple[float, Prepared] | None:
        """:meth:`answer`'s steps before the model call for a request whose whole ``body`` has
        been read, without a coroutine (:func:`_prepare_now`): None when only :meth:`answer`
        can answer it (nothing was done), else what :meth:`answer_now` needs."""
        t0 = time.perf_counter()
        endpoint, name, ref = hit
        prepared = _prepare_now(self.server, body, name, ref, endpoint)
        return None if prepared is None else (t0, prepared)

    def answer_now(
        self, scope: dict[str, Any], hit: tuple[Any, str, str | None],
        prepared: tuple[float, Prepared], respond: Callable[[Refusal], None],
        crash: Callable[[dict[str, Any], BaseException, Callable[[Refusal], None]], None],
    ) -> None:  # fmt: skip
        """Finish a request :meth:`prepare_now` prepared: ``respond`` gets (status, headers,
        body), now or when the model call is done, or ``crash`` the error (with the scope and
        ``respond``)."""
        endpoint, name, _ = hit
        t0, ready = prepared
        _answer_now(self.server, scope, name, t0, endpoint, ready, respond, crash)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        hit = self.hit(scope)
        if hit is not None:
            await self.answer(scope, receive, send, hit)
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------- front door
# Layers of the app's stack that the front door knows. Exception wrappers are kept around a
# prediction (the same instances' settings: the app's 500 handler, telemetry's record of the
# error); the limits and auth layers are replaced by their own checks; a body-limit layer with
# no limit set does nothing and is skipped. Any other layer (an unknown user middleware, a
# FastAPI body limit in force) keeps the front door shut: predictions then go through the
# whole stack to the inner fast path, as before.
_WRAPPERS: tuple[type, ...] = (ServerErrorMiddleware,)
_NO_OPS: tuple[type, ...] = ()
try:  # FastAPI >= 0.16x's own layers (private modules: absent elsewhere, and then unknown)
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware

    _WRAPPERS += (ExceptionTelemetryMiddleware,)
except ImportError:  # pragma: no cover - other FastAPI versions
    pass
try:
    from fastapi._body_limit import AppBodyLimitMiddleware

    _NO_OPS += (AppBodyLimitMiddleware,)
except ImportError:  # pragma: no cover - other FastAPI versions
    pass


class FrontDoor:
    """The outermost layer of an app's middleware stack that answers the prediction paths
    without crossing the layers between it and the inner :class:`FastPath`.

    Built by :func:`front_door` from the app's stack: it runs the same auth and limit checks
    those layers run (:meth:`autotune.auth.AuthMiddleware.check`,
    :meth:`autotune.api.limits.LimitsMiddleware.check`), in the same order and sharing their
    state (rate buckets, key cache), inside copies of the same exception wrappers (so an
    unexpected error becomes the app's JSON 500, never a traceback). Every other request goes
    on to the stack untouched.
    """

    def __init__(self, app: ASGIApp, fast: FastPath, gates: list[Any], wrappers: list[Any]) -> None:
        self.app = app
        self.fast = fast
        self._gates = gates
        self._wrappers = wrappers
        # Answers a prediction request (ASGI): checks, fast path, exception wrappers.
        self.guarded: ASGIApp = _wrap(wrappers, self._gated)
        # answer_now must not run a limit check before it learns that the request has to go
        # the ASGI way (which would count it again): it runs the auth checks, then the
        # request's own steps up to the model call, then the limits. That is the ASGI way's
        # order only with every auth layer above every limits layer, as the apps here stack
        # them; otherwise answer_now leaves every request to the ASGI way.
        kinds = [type(g) is LimitsMiddleware for g in gates]
        self._now = kinds == sorted(kinds)
        self._auth_gates = [g for g in gates if type(g) is not LimitsMiddleware]
        self._limit_gates = [g for g in gates if type(g) is LimitsMiddleware]
        self._crashes: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.fast.hit(scope) is not None:
            await self.guarded(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _gated(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body_limit: tuple[LimitsMiddleware, BodyLimit] | None = None
        reset = None
        try:
            for gate in self._gates:
                if type(gate) is LimitsMiddleware:
                    refusal, chunked = gate.check(scope)
                    if chunked is not None:
                        body_limit = (gate, chunked)
                else:  # AuthMiddleware
                    refusal, scope, principal = await gate.check(scope)
                    if principal is not None and reset is None:
                        reset = current_project.set(principal.project)
                if refusal is not None:
                    await send_refusal(send, refusal)
                    return
            if body_limit is not None:  # chunked: read to the limit, as the layer would
                receive = await body_limit[0].read_chunked(receive, send, body_limit[1])
                if receive is None:
                    return
            hit = self.fast.hit(scope)  # again: auth may have qualified the model's name
            assert hit is not None
            await self.fast.answer(scope, receive, send, hit)
        finally:
            if reset is not None:
                current_project.reset(reset)

    def answer_now(
        self, scope: dict[str, Any], body: bytes, respond: Callable[[Refusal], None]
    ) -> bool:
        """Answer a prediction request whose whole ``body`` has been read without a coroutine:
        the same checks as :meth:`_gated` and the same steps as :meth:`FastPath.answer`, with
        the same answers. False when only the ASGI way (:attr:`guarded`) can answer it (an API
        key not in the cache, a model not loaded yet, entities to look up, ...): then nothing
        was answered or counted, rate limits included. Else True, and ``respond`` gets
        (status, headers, body): at once, or when the model call is done; an unexpected error
        is answered by the app's exception wrappers, as on the ASGI way.

        ``scope`` must be an HTTP request of a prediction path whose body was not chunked."""
        if not self._now:
            return False
        hit = self.fast.hit(scope)
        if hit is None:
            return False
        asked = scope
        reset = None
        try:
            # Auth first (the order _now ensures), then the request's own steps, which may
            # find it must wait (then the ASGI way runs every check: none was counted yet),
            # then the limits, then the model.
            for gate in self._auth_gates:
                decided = gate.check_now(scope)
                if decided is None:
                    return False
                refusal, scope, principal = decided
                if refusal is not None:
                    respond(refusal)
                    return True
                if principal is not None and reset is None:
                    reset = current_project.set(principal.project)
            if scope is not asked:  # auth qualified the model's name
                hit = self.fast.hit(scope)
                assert hit is not None
            prepared = self.fast.prepare_now(body, hit)
            if prepared is None:
                return False
            for gate in self._limit_gates:
                refusal, chunked = gate.check(scope)
                if chunked is not None and len(body) > chunked.limit:
                    refusal = gate.too_large(chunked, f"{len(body)} bytes")
                if refusal is not None:
                    respond(refusal)
                    return True
            self.fast.answer_now(scope, hit, prepared, respond, self.crash)
            return True
        finally:
            if reset is not None:
                current_project.reset(reset)

    def crash(
        self, scope: dict[str, Any], error: BaseException, respond: Callable[[Refusal], None]
    ) -> None:
        """Answer ``error`` through the app's exception wrappers, as if the app had raised it:
        the app's 500 (JSON, no traceback), logged as on the ASGI way."""

        async def fail(scope: dict[str, Any], receive: Any, send: Any) -> None:
            raise error

        start: dict[str, Any] = {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif not message.get("more_body", False) and start:
                respond((start["status"], list(start.get("headers", [])), message.get("body", b"")))

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def run() -> None:
            try:
                await _wrap(self._wrappers, fail)(scope, receive, send)
            except BaseException as e:  # the wrappers raise again after answering, to be logged
                _server_log.error("Exception in ASGI application\n", exc_info=e)
                if not start:
                    body = b"Internal Server Error"
                    respond((500, [(b"content-type", b"text/plain; charset=utf-8"),
                                   (b"content-length", b"21")], body))  # fmt: skip

        task = asyncio.get_running_loop().create_task(run())
        self._crashes.add(task)
        task.add_done_callback(self._crashes.discard)


def _wrap(wrappers: list[Any], app: ASGIApp) -> ASGIApp:
    """``app`` inside copies of the exception-wrapping layers ``wrappers`` (outermost first)."""
    for w in reversed(wrappers):  # innermost first
        w = copy.copy(w)
        w.app = app
        app = w
    return app


def front_door(stack: ASGIApp) -> ASGIApp:
    """``stack`` behind a :class:`FrontDoor`, or ``stack`` itself when a layer between its top
    and its :class:`FastPath` is one the front door does not know (or there is no FastPath)."""
    gates: list[Any] = []
    wrappers: list[Any] = []
    layer: Any = stack
    while not isinstance(layer, FastPath):
        if isinstance(layer, _WRAPPERS):
            wrappers.append(layer)
        elif type(layer) in (LimitsMiddleware, AuthMiddleware):
            gates.append(layer)
        elif not isinstance(layer, _NO_OPS):
            return stack
        layer = getattr(layer, "app", None)
        if layer is None:
            return stack
    return FrontDoor(stack, layer, gates, wrappers)
