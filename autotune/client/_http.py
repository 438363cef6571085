"""The HTTP transport: the REST API through httpx, with timeouts and safe retries.

Retries. A connect error (nothing reached the server) is always retried, with exponential
backoff, as is a 503 (the server answered that it or its database is busy). An error after the
request was sent (read timeout, dropped connection) is retried only for idempotent requests:
reads, state changes that set a fixed state, heartbeats, and ``suggest``, which always carries a
``client_id`` (one generated per call when the caller gives none) so that the server answers a
retried suggest with the trials it already made, and ``report``, which the service upserts by
step. ``observe`` and ``fail`` are retried too: if the retry finds the trial already finished,
the trial is read back, and when it holds exactly what was sent, an earlier attempt was applied
and its answer lost, so the call succeeds. ``enqueue`` and ``create_study`` are not retried then:
an :class:`~autotune.errors.UnavailableError` says the request may or may not have been applied.

Errors in the body (``{"error": {...}}``) become the same exception classes the service raises.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

import autotune
from autotune.client._auth import auth_headers
from autotune.client._base import Listing, QueuedConfig
from autotune.errors import (
    NotFoundError,
    TrialFinishedError,
    UnavailableError,
    ValidationError,
    error_from_payload,
)
from autotune.models import Study, StudyState, Trial, TrialState

__all__ = ["HttpTransport"]

logger = logging.getLogger("autotune.client")

# 503: the database was busy; 429: over the rate limit, refused before anything ran.
_RETRY_STATUSES = frozenset({429, 503})
# Errors raised before any byte of the request left: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAX_RETRY_AFTER_S = 10.0
_MAX_REASON_CHARS = 10_000  # as autotune.service.MAX_ERROR_CHARS


class HttpTransport:
    """Args:
    url: the server's base URL, e.g. ``http://127.0.0.1:8000`` (``/v1`` is added).
    timeout: seconds to wait for a response (a suggest on a big study takes a while).
    connect_timeout: seconds to wait for a connection.
    retries: how many times to retry a request that may be retried (see the module doc).
    backoff: first retry delay in seconds; doubles each retry up to ``max_backoff``.
    http_transport: an httpx transport to send through (tests pass ``httpx.MockTransport``).
    api_key: sent as ``Authorization: Bearer``; ``None``: ``AUTOTUNE_API_KEY`` if set.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 6,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        http_transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={
                "User-Agent": f"autotune-client/{autotune.__version__}",
                **auth_headers(api_key),
            },
            transport=http_transport,
        )

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    def close(self) -> None:
        self._http.close()

    # -- the one request path -----------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool,
        resent: list[bool] | None = None,
    ) -> Any:
        """``resent`` (when given) gets an item each time a request that may have reached the
        server is sent again."""
        url = f"{self.url}/v1{path}"
        content = None
        headers = {}
        if body is not None:
            # json.dumps rather than httpx's json=, which refuses NaN: the server answers a NaN
            # metric with the same ValidationError the embedded service raises.
            try:
                content = json.dumps(body, default=_json_default)
            except (TypeError, ValueError) as e:
                raise ValidationError(f"request body is not JSON: {e}", field="body") from e
            headers["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self._http.request(
                    method, url, content=content, headers=headers, params=query
                )
            except _NOT_SENT as e:
                if attempt >= self.retries:
                    raise UnavailableError(
                        f"cannot reach the AutoTune server at {self.url} "
                        f"after {attempt + 1} attempt(s): {e}",
                        details={"url": self.url, "attempts": attempt + 1},
                    ) from e
                error: Exception = e
            except httpx.TransportError as e:
                if not idempotent or attempt >= self.retries:
                    applied = "" if idempotent else " (it may or may not have been applied)"
                    raise UnavailableError(
                        f"{method} {path} to {self.url} failed{applied}: {type(e).__name__}: {e}",
                        details={"url": self.url, "attempts": attempt + 1},
                    ) from e
                error = e
                if resent is not None:
                    resent.append(True)
            else:
                if response.status_code in _RETRY_STATUSES and attempt < self.retries:
                    error = error_from_payload(response.status_code, _payload(response))
                    retry_after = _retry_after(response)
                    if resent is not None and response.status_code == 503:
                        resent.append(True)  # a busy database may have committed it
                else:
                    if (
                        response.status_code == 404
                        and attempt > 0
                        and method == "DELETE"
                        and idempotent
                    ):
                        return None  # an earlier attempt deleted it; its answer was lost
                    if response.is_error:
                        raise error_from_payload(response.status_code, _payload(response))
                    return response.json()
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            delay = max(delay * random.uniform(0.5, 1.0), retry_after or 0.0)
            logger.info("retrying %s %s in %.2fs after %s", method, path, delay, error)
            time.sleep(delay)
            attempt += 1

    # -- studies ------------------------------------------------------------------------------
    def create_study(self, spec: Mapping[str, Any]) -> Study:
        data = self._request("POST", "/studies", body=dict(spec), idempotent=False)
        return Study.model_validate(data)

    def get_study(self, name: str) -> Study:
        return Study.model_validate(self._request("GET", _study(name), idempotent=True))

    def list_studies(self, *, state: StudyState | None, offset: int, limit: int) -> Listing[Study]:
        data = self._request(
            "GET",
            "/studies",
            params={"state": state.value if state else None, "offset": offset, "limit": limit},
            idempotent=True,
        )
        return Listing(
            items=[Study.model_validate(s) for s in data["items"]], total=int(data["total"])
        )

    def set_study_state(self, name: str, state: StudyState) -> Study:
        verb = {
            StudyState.ACTIVE: "resume",
            StudyState.PAUSED: "pause",
            StudyState.COMPLETED: "complete",
        }[StudyState(state)]
        data = self._request("POST", f"{_study(name)}/{verb}", idempotent=True)
        return Study.model_validate(data)

    def delete_study(self, name: str) -> None:
        self._request("DELETE", _study(name), idempotent=True)

    # -- trials -------------------------------------------------------------------------------
    def suggest(self, name: str, *, count: int, client_id: str | None) -> list[Trial]:
        body = {"count": count, "client_id": client_id or f"autotune-{uuid.uuid4().hex}"}
        data = self._request("POST", f"{_study(name)}/suggest", body=body, idempotent=True)
        return [Trial.model_validate(t) for t in data["trials"]]

    def observe(
        self,
        name: str,
        number: int,
        values: Mapping[str, float],
        *,
        metadata: Mapping[str, Any] | None,
    ) -> Trial:
        body: dict[str, Any] = {"values": dict(values)}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        sent = {k: float(v) for k, v in values.items()}
        return self._finish(
            name,
            number,
            "observe",
            body,
            applied=lambda t: t.state == TrialState.COMPLETED and t.values == sent,
        )

    def report(self, name: str, number: int, *, step: int, value: float) -> bool:
        body = {"step": step, "value": value}
        # The service upserts by (trial, step), so sending a report twice stores it once.
        data = self._request("POST", _trial(name, number, "report"), body=body, idempotent=True)
        return bool(data["should_stop"])

    def fail(self, name: str, number: int, *, reason: str) -> Trial:
        # The service keeps the first _MAX_REASON_CHARS characters, NUL replaced.
        kept = str(reason)[:_MAX_REASON_CHARS].replace("\x00", "\ufffd")
        return self._finish(
            name,
            number,
            "fail",
            {"reason": reason},
            applied=lambda t: t.state == TrialState.FAILED and t.error == kept,
        )

    def _finish(
        self, name: str, number: int, action: str, body: Any, *, applied: Callable[[Trial], bool]
    ) -> Trial:
        """Send a finishing request, retried after a dropped connection; a retry answered
        "already finished" succeeds if the stored trial is what ``applied`` expects."""
        resent: list[bool] = []
        try:
            data = self._request(
                "POST", _trial(name, number, action), body=body, idempotent=True, resent=resent
            )
        except TrialFinishedError:
            if not resent:
                raise
            trial = self.get_trial(name, number)
            if not applied(trial):
                raise
            logger.info("%s of trial %d was applied before its answer was lost", action, number)
            return trial
        return Trial.model_validate(data)

    def heartbeat(self, name: str, number: int) -> Trial:
        data = self._request("POST", _trial(name, number, "heartbeat"), idempotent=True)
        return Trial.model_validate(data)

    def enqueue(self, name: str, params: Mapping[str, Any]) -> QueuedConfig:
        data = self._request(
            "POST", f"{_study(name)}/enqueue", body={"params": dict(params)}, idempotent=False
        )
        return QueuedConfig(id=int(data["id"]), params=dict(data["params"]))

    def get_trial(self, name: str, number: int) -> Trial:
        return Trial.model_validate(self._request("GET", _trial(name, number), idempotent=True))

    def list_trials(
        self, name: str, *, state: TrialState | None, offset: int, limit: int
    ) -> Listing[Trial]:
        data = self._request(
            "GET",
            f"{_study(name)}/trials",
            params={"state": state.value if state else None, "offset": offset, "limit": limit},
            idempotent=True,
        )
        return Listing(
            items=[Trial.model_validate(t) for t in data["items"]], total=int(data["total"])
        )

    def best_trials(self, name: str) -> list[Trial]:
        data = self._request("GET", f"{_study(name)}/best", idempotent=True)
        return [Trial.model_validate(t) for t in data["trials"]]


def _study(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise NotFoundError(f"study {name!r} not found", details={"study": name})
    return f"/studies/{quote(name, safe='')}"


def _trial(name: str, number: int, action: str | None = None) -> str:
    path = f"{_study(name)}/trials/{int(number)}"
    return f"{path}/{action}" if action else path


def _payload(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("Retry-After", "")), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, which metrics often are
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
