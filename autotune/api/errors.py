"""The API's one set of exception handlers: every error leaves as ``{"error": {...}}``.

- ``AutotuneError`` subclasses: their own ``status`` and ``to_payload()``.
- Request validation (malformed JSON, wrong types, out-of-range query): 422 ``invalid_argument``
  with a message naming the field and the pydantic errors in ``details.errors``.
- Starlette's HTTP errors (unknown route, wrong method): their status, same shape; a body that
  is not even text (FastAPI's 400) is a 422 on ``body`` like malformed JSON.
- A number too large for the database (``OverflowError``): 422 ``invalid_argument``.
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

__all__ = [
    "install_error_handlers",
    "document_error_responses",
    "add_error_responses",
    "ErrorBody",
    "ErrorResponse",
    "ERROR_RESPONSES",
]

logger = logging.getLogger("autotune.api")

_CODE_BY_STATUS = {
    400: "invalid_argument",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
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
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI's "error parsing the body": bytes that are not UTF-8 text. The same answer as
        # for malformed JSON.
        err = ValidationError(
            f"the body is not valid JSON text ({type(exc.__cause__).__name__}: "
            f"{str(exc.__cause__)[:200]})",
            field="body",
        )
        return _json(err.status, err.to_payload())
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


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # A number the database driver cannot bind (SQLite: beyond 64 bits).
    err = ValidationError(
        f"a number in the request is out of range for the database ({exc})", field="body"
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
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(Exception, _unexpected)
    document_error_responses(app)


# The errors any operation may answer with, whatever its route declares: the handlers above and
# the limits middleware (autotune/api/limits.py) produce them for every route.
_ALWAYS = {
    422: "Invalid input; details name the field and the allowed bound.",
    429: "Too many requests from this API key or address; retry after Retry-After seconds.",
    503: "Database busy or unreachable; retry.",
}
_WITH_PATH_PARAMS = {404: "The named resource does not exist."}
_WITH_BODY = {
    409: "Conflicts with the current state.",
    413: "The request body is larger than this route allows.",
}
_BODY_METHODS = ("post", "put", "patch", "delete")


def _error_schema() -> dict[str, Any]:
    # Inline (no $ref), so the document needs no component of its own.
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    }


def add_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare in an OpenAPI ``document`` the error statuses every operation can answer with
    (those it does not declare already). Returns the document, changed in place."""
    content = {"application/json": {"schema": _error_schema()}}
    for path, item in document.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            codes: dict[int, str] = dict(_ALWAYS)
            if "{" in path:
                codes.update(_WITH_PATH_PARAMS)
            if method in _BODY_METHODS:
                codes.update(_WITH_BODY)
            responses = op["responses"]
            for code, description in codes.items():
                responses.setdefault(str(code), {"description": description, "content": content})
    return document


def document_error_responses(app: FastAPI) -> None:
    """Make ``app``'s ``/openapi.json`` declare the errors every operation can answer with."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
