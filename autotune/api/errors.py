"""The API's one set of exception handlers: every error leaves as ``{"error": {...}}``.

- ``AutotuneError`` subclasses: their own ``status`` and ``to_payload()``.
- Request validation (malformed JSON, wrong types, out-of-range query): 422 ``invalid_argument``
  with a message naming the field and the pydantic errors in ``details.errors``.
- Starlette's HTTP errors (unknown route, wrong method): their status, same shape.
- Database errors the client can act on: 503 ``unavailable`` (busy or unreachable; retryable)
  and 422 ``invalid_argument`` (a value the database refused).
- Anything else: 500 ``internal`` with no traceback in the body; the traceback is logged.

The HTTP client turns these bodies back into the same exception classes
(:func:`autotune.errors.error_from_payload`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from autotune.errors import AutotuneError, UnavailableError, ValidationError

__all__ = ["install_error_handlers", "ErrorBody", "ErrorResponse", "ERROR_RESPONSES"]

logger = logging.getLogger("autotune.api")

_CODE_BY_STATUS = {
    400: "invalid_argument",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "invalid_argument",
    415: "invalid_argument",
    422: "invalid_argument",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


# For the OpenAPI document: the error statuses any route may answer with.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Study or trial not found."},
    409: {"model": ErrorResponse, "description": "Conflicts with the current state."},
    422: {"model": ErrorResponse, "description": "Invalid input; details name the field."},
    503: {"model": ErrorResponse, "description": "Database busy or unreachable; retry."},
}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    return JSONResponse(payload, status_code=status, headers=headers)


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _autotune_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AutotuneError)
    if exc.status >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc)
    return _json(exc.status, exc.to_payload())


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            # loc is ("body", <character offset>): say where, but name the body as the field
            reason = (err.get("ctx") or {}).get("error") or "malformed"
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            msg = f"invalid JSON{at} ({reason})"
            loc = ["body"]
        msg = msg.removeprefix("Value error, ")
        errors.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
    first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
    # "field" drops the leading "body"/"query"/"path" so it reads like the service's own
    # ValidationError fields ("values.loss", "count"); the message keeps the full location.
    loc = first["loc"]
    field = _loc(loc[1:]) if len(loc) > 1 and loc[0] in ("body", "query", "path") else _loc(loc)
    message = f"{_loc(loc)}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s) in details.errors)"
    err = ValidationError(message, field=field or "body", details={"errors": errors})
    return _json(err.status, err.to_payload())


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "internal" if exc.status_code >= 500 else "error")
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
        details: dict[str, Any] = {"path": request.url.path}
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        details = {"path": request.url.path, "method": request.method}
    else:
        message = str(exc.detail)
        details = {}
    payload = {"error": {"code": code, "message": message, "details": details}}
    return _json(exc.status_code, payload, headers=getattr(exc, "headers", None))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s -> database unavailable: %s", request.method, request.url.path, exc)
    err = UnavailableError(
        "the database is busy or unreachable; retry later",
        details={"reason": type(exc).__name__},
    )
    return _json(err.status, err.to_payload(), headers={"Retry-After": "1"})


async def _database_refused(request: Request, exc: Exception) -> JSONResponse:
    # A DataError is a value the database could not store (out of range, bad characters).
    logger.warning("%s %s -> database refused a value: %s", request.method, request.url.path, exc)
    err = ValidationError(
        "the database refused a value in the request (out of range or bad characters)",
        field="body",
        details={"reason": type(exc).__name__},
    )
    return _json(err.status, err.to_payload())


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    payload = {
        "error": {
            "code": "internal",
            "message": "internal server error; the server log has the details",
            "details": {},
        }
    }
    return _json(500, payload)


def install_error_handlers(app: FastAPI) -> None:
    """Register the one handler set on ``app``."""
    app.add_exception_handler(AutotuneError, _autotune_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa_exc.OperationalError, _database_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)
    app.add_exception_handler(sa_exc.DataError, _database_refused)
    app.add_exception_handler(Exception, _unexpected)
