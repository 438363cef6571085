"""The error hierarchy of the tuning core.

Every error a user can cause is an ``AutotuneError`` with a stable ``code``, an HTTP ``status``
and ``details`` (a JSON-able dict, usually naming the offending field). One exception handler in
the REST API turns them into ``{"error": {"code", "message", "details"}}`` and the HTTP client
turns such a body back into the same class, so both transports raise the same exceptions.

``retryable`` says whether the same request may succeed if simply sent again (Vizier ties each
error to a retry behaviour in the same way).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

__all__ = [
    "AutotuneError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "AlreadyExistsError",
    "TrialFinishedError",
    "StudyNotActiveError",
    "UnavailableError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "error_from_payload",
    "Refusal",
    "refusal",
    "send_refusal",
]


class AutotuneError(Exception):
    """Root of every AutoTune error. Not retryable unless a subclass says so."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return self.message

    def to_payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationError(AutotuneError, ValueError):
    """The input is malformed or out of range; ``details["field"]`` names it. Not retryable."""

    code = "invalid_argument"
    status = 422

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if field is not None:
            merged.setdefault("field", field)
        super().__init__(message, details=merged)
        # Rebuilt from an HTTP error body, the field arrives in details only.
        self.field = field if field is not None else merged.get("field")


class NotFoundError(AutotuneError, KeyError):
    """The study, trial or other resource does not exist. Not retryable."""

    code = "not_found"
    status = 404


class ConflictError(AutotuneError):
    """The request conflicts with the resource's current state. Not retryable as is."""

    code = "conflict"
    status = 409


class AlreadyExistsError(ConflictError):
    """A resource with that unique name already exists."""

    code = "already_exists"


class TrialFinishedError(ConflictError):
    """The trial is already completed, failed or pruned and cannot change any more."""

    code = "trial_finished"


class StudyNotActiveError(ConflictError):
    """The study is paused or completed and hands out no new trials."""

    code = "study_not_active"


class UnavailableError(AutotuneError):
    """The server or database could not be reached or was busy. Retryable."""

    code = "unavailable"
    status = 503
    retryable = True


class UnauthenticatedError(AutotuneError):
    """No API key, or one that is unknown or revoked (HTTP 401). Not retryable as is."""

    code = "unauthenticated"
    status = 401


class PermissionDeniedError(AutotuneError):
    """The API key's scope does not allow the request (HTTP 403). Not retryable as is."""

    code = "permission_denied"
    status = 403


class PayloadTooLargeError(ValidationError):
    """The request body is larger than the route allows; nothing was stored. Not retryable as
    is: send less per request."""

    code = "payload_too_large"
    status = 413


class RateLimitedError(AutotuneError):
    """The API key (or client address) sent more requests than its rate allows; nothing was
    done. Retryable after ``details["retry_after_s"]`` seconds (the ``Retry-After`` header)."""

    code = "rate_limited"
    status = 429
    retryable = True


_BY_CODE: dict[str, type[AutotuneError]] = {
    cls.code: cls
    for cls in (
        AutotuneError,
        ValidationError,
        NotFoundError,
        ConflictError,
        AlreadyExistsError,
        TrialFinishedError,
        StudyNotActiveError,
        UnavailableError,
        UnauthenticatedError,
        PermissionDeniedError,
        PayloadTooLargeError,
        RateLimitedError,
    )
}


def register_error(cls: type[AutotuneError]) -> type[AutotuneError]:
    """Let other packages (serving, features) add error classes that travel over HTTP."""
    existing = _BY_CODE.get(cls.code)
    if existing is not None and existing is not cls:
        raise ValueError(f"error code {cls.code!r} is already taken by {existing.__name__}")
    _BY_CODE[cls.code] = cls
    return cls


def error_from_payload(status: int, payload: Any) -> AutotuneError:
    """Rebuild the typed error from an HTTP error body (used by the HTTP client)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return AutotuneError(f"HTTP {status}: {payload!r}")
    cls = _BY_CODE.get(str(err.get("code")), AutotuneError)
    message = str(err.get("message", f"HTTP {status}"))
    details = err.get("details") or {}
    if issubclass(cls, ValidationError):
        return cls(message, details=details)
    return cls(message, details=details)


# An error answered by ASGI middleware before the app runs: (status, headers, body).
Refusal = tuple[int, list[tuple[bytes, bytes]], bytes]


def refusal(err: AutotuneError, extra: list[tuple[bytes, bytes]]) -> Refusal:
    """``err`` as the REST API's JSON error response, with ``extra`` headers."""
    body = json.dumps(err.to_payload()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return err.status, headers, body


async def send_refusal(send: Any, answer: Refusal) -> None:
    """Send a :data:`Refusal` on an ASGI ``send``."""
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
