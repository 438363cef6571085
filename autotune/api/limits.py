"""Every request limit of the server, in one place, and the middleware that enforces two of them.

What one request may ask for:

- body size: 1 MiB for the tuning API; more for the routes that carry data (predict and infer
  rows, online lookups: ``max_predict_bytes``; feature ingestion, training-set labels, model
  artifacts: ``max_upload_bytes``). Too big -> 413 ``payload_too_large``.
- request rate: a token bucket per API key (the ``X-API-Key`` header or an ``Authorization:
  Bearer`` token), or per client address when there is none. Over it -> 429 ``rate_limited``
  with ``Retry-After``. Generous by default (1000 a second, bursts of 2000: it stops a runaway
  client, not a busy one) and loopback clients are exempt unless ``rate_limit_loopback`` (so
  local benchmarks and tests are unaffected); ``AUTOTUNE_RATE_LIMIT=0`` turns it off. The
  buckets live in each server process: with N worker processes a client gets up to N times the
  rate.
- counts and lengths (suggest count, page size, names, keys, metadata, parameters, objectives,
  choices, rows per predict request): checked by the request models, 422 naming the field and
  the bound. The bounds are the constants below, with those of the domain models and the
  serving schemas that they re-export or mirror.

Body size and rate are enforced by :class:`LimitsMiddleware`, a pure ASGI middleware (no
``BaseHTTPMiddleware``: it neither wraps the response nor copies the body of a request that
states its length), so the serving hot path pays a header scan and a dict lookup. Its checks
(:meth:`LimitsMiddleware.check`, :meth:`LimitsMiddleware.too_large`) are also what the serving
fast path's front door runs for the predict paths, which skip the middleware layers
(``serving.fastpath.FrontDoor``): one implementation, one set of rate buckets.

Every setting can be overridden from the environment (``AUTOTUNE_MAX_BODY_BYTES`` and so on,
see :meth:`LimitSettings.from_env`).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from autotune.errors import (
    PayloadTooLargeError,
    RateLimitedError,
    Refusal,
    refusal,
    send_refusal,
)
from autotune.models import MAX_CONSTRAINTS, MAX_METADATA_BYTES, MAX_OBJECTIVES, MAX_STUDY_NAME
from autotune.space import MAX_CHOICES, MAX_PARAMS

__all__ = [
    "PayloadTooLargeError",
    "RateLimitedError",
    "LimitSettings",
    "LimitsMiddleware",
    "BodyLimit",
    "TokenBuckets",
    "install_limits",
    "MIB",
    "MAX_SUGGEST",
    "MAX_PAGE",
    "MAX_KEY",
    "MAX_CLIENT_ID",
    "MAX_METRICS",
    "MAX_METADATA_BYTES",
    "MAX_PARAMS",
    "MAX_OBJECTIVES",
    "MAX_CONSTRAINTS",
    "MAX_CHOICES",
    "MAX_STUDY_NAME",
]

MIB = 1024 * 1024


# ---------------------------------------------------------------- counts and lengths (-> 422)
# One suggest request's trials: more would be one huge transaction (the service's
# MAX_SUGGEST_COUNT; a test keeps them equal).
MAX_SUGGEST = 1000
# Items per page of any list (the service's MAX_PAGE_LIMIT).
MAX_PAGE = 1000
# A key of a mapping a user sends (metric name, parameter name, feature name).
MAX_KEY = 256
# An idempotency token of a suggest request.
MAX_CLIENT_ID = 256
# Metrics in one observe (objectives plus constraint metrics plus a margin of others).
MAX_METRICS = 256

# Paths whose health checks are never rate limited (load balancers poll them).
_UNLIMITED_PATHS = frozenset({"/v1/health", "/v2/health/live", "/v2/health/ready", "/metrics"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost", "testclient"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _env_int(env: MutableMapping[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _env_float(env: Any, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _env_bool(env: Any, name: str, default: bool) -> bool:
    raw = env.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class LimitSettings:
    """The server's configurable limits (the counts and lengths above are fixed).

    Args:
        max_body_bytes: the largest request body of the tuning API (studies, trials).
        max_predict_bytes: the largest body of a predict, infer or online-lookup request.
        max_upload_bytes: the largest body of a feature ingestion, a training set's labels or a
            model version's artifact.
        rate_per_s: requests per second each API key (or client address) may sustain; 0 turns
            rate limiting off.
        rate_burst: requests a key may send at once after being idle (the bucket's size).
        rate_limit_loopback: also limit clients on 127.0.0.1 / ::1.
        max_rate_keys: buckets kept at most (the least recently used are dropped first).
    """

    max_body_bytes: int = 1 * MIB
    max_predict_bytes: int = 64 * MIB
    max_upload_bytes: int = 512 * MIB
    rate_per_s: float = 1000.0
    rate_burst: int = 2000
    rate_limit_loopback: bool = False
    max_rate_keys: int = 100_000

    def __post_init__(self) -> None:
        for f in ("max_body_bytes", "max_predict_bytes", "max_upload_bytes"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be at least 1 byte, got {getattr(self, f)}")
        if self.rate_per_s < 0 or not math.isfinite(self.rate_per_s):
            raise ValueError(f"rate_per_s must be a finite number >= 0, got {self.rate_per_s}")
        if self.rate_burst < 1:
            raise ValueError(f"rate_burst must be at least 1, got {self.rate_burst}")
        if self.max_rate_keys < 1:
            raise ValueError(f"max_rate_keys must be at least 1, got {self.max_rate_keys}")

    # Environment variable of each field.
    ENV = {
        "max_body_bytes": "AUTOTUNE_MAX_BODY_BYTES",
        "max_predict_bytes": "AUTOTUNE_MAX_PREDICT_BYTES",
        "max_upload_bytes": "AUTOTUNE_MAX_UPLOAD_BYTES",
        "rate_per_s": "AUTOTUNE_RATE_LIMIT",
        "rate_burst": "AUTOTUNE_RATE_BURST",
        "rate_limit_loopback": "AUTOTUNE_RATE_LIMIT_LOOPBACK",
        "max_rate_keys": "AUTOTUNE_RATE_MAX_KEYS",
    }

    @classmethod
    def from_env(cls, env: Any = None) -> LimitSettings:
        """The defaults, overridden by ``AUTOTUNE_*`` variables (see :attr:`ENV`)."""
        e = os.environ if env is None else env
        d = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = cls.ENV[f.name]
            default = getattr(d, f.name)
            if isinstance(default, bool):
                values[f.name] = _env_bool(e, name, default)
            elif isinstance(default, float):
                values[f.name] = _env_float(e, name, default)
            else:
                values[f.name] = _env_int(e, name, default)
        return cls(**values)


class TokenBuckets:
    """Token buckets keyed by client: ``rate`` tokens a second, at most ``burst`` saved up.

    ``take(key)`` spends one token and answers 0.0, or answers how many seconds until one is
    there (the request is refused, nothing spent). The least recently seen keys are dropped when
    there are more than ``max_keys``: a dropped key starts again with a full bucket.
    """

    __slots__ = ("rate", "burst", "max_keys", "_buckets", "_clock")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, time]
        self._clock = clock

    def take(self, key: str) -> float:
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            b = [self.burst, now]
            self._buckets[key] = b
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        return (1.0 - b[0]) / self.rate


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The body limit of a request whose size is not known before it is read (chunked)."""

    limit: int
    setting: str


class LimitsMiddleware:
    """Pure ASGI middleware: refuse over-large bodies (413) and over-eager clients (429).

    A request that states its ``Content-Length`` is judged on it before the app runs; one sent
    chunked is read here up to the limit (413 as soon as it passes it) and handed to the app as
    it came. Either way the app never sees a refused request, so nothing of it is stored.

    :meth:`check` and :meth:`too_large` are the checks themselves, for a layer in front of this
    one that answers some requests on its own (the serving fast path) and must refuse exactly
    as this middleware does, sharing its rate buckets.
    """

    def __init__(self, app: ASGIApp, settings: LimitSettings) -> None:
        self.app = app
        self.settings = settings
        self.buckets = (
            TokenBuckets(settings.rate_per_s, settings.rate_burst, max_keys=settings.max_rate_keys)
            if settings.rate_per_s > 0
            else None
        )
        smallest = min(
            settings.max_body_bytes, settings.max_predict_bytes, settings.max_upload_bytes
        )
        self._small_digits = len(str(smallest))

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """The body limit of a request, and the setting that holds it."""
        s = self.settings
        if path.startswith("/v2/"):
            return s.max_predict_bytes, "max_predict_bytes"
        if path.startswith("/v1/models/"):
            if path.endswith("/predict"):
                return s.max_predict_bytes, "max_predict_bytes"
            if method == "POST" and path.endswith("/versions"):
                return s.max_upload_bytes, "max_upload_bytes"
        elif path.startswith("/v1/feature-groups/"):
            if path.endswith("/ingest"):
                return s.max_upload_bytes, "max_upload_bytes"
            if path.endswith("/online"):
                return s.max_predict_bytes, "max_predict_bytes"
        elif path == "/v1/training-sets":
            return s.max_upload_bytes, "max_upload_bytes"
        return s.max_body_bytes, "max_body_bytes"

    def check(self, scope: dict[str, Any]) -> tuple[Refusal | None, BodyLimit | None]:
        """Judge an HTTP request on its headers.

        Returns:
            (answer, chunked): the 429 or 413 to send instead of running the app, or None;
            and, for a body sent chunked, the limit to hold it to while it is read.
        """
        if self.buckets is not None:
            answer = self._admit(scope)
            if answer is not None:
                return answer, None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if len(value) < self._small_digits:
                    # Fewer digits than the smallest limit: under every limit, no parsing.
                    return None, None
                length = value
                break
            if name == b"transfer-encoding":
                break
        else:  # neither: no body
            return None, None
        limit, setting = self.body_limit(scope["method"], scope["path"])
        if length is None:
            return None, BodyLimit(limit, setting)
        try:
            size = int(length)
        except ValueError:
            size = -1  # the HTTP server refuses such a request before it gets here
        if size > limit:
            return self.too_large(BodyLimit(limit, setting), f"{size} bytes"), None
        return None, None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer, chunked = self.check(scope)
        if answer is not None:
            await send_refusal(send, answer)
            return
        if chunked is not None:
            receive = await self.read_chunked(receive, send, chunked)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def read_chunked(
        self, receive: Any, send: Any, chunked: BodyLimit
    ) -> Callable[[], Awaitable[dict[str, Any]]] | None:
        """Read a body sent chunked whole (the routes would anyway), stopping at its limit.

        Returns:
            a ``receive`` that replays what was read, or None once the 413 has been sent.
        """
        messages: list[dict[str, Any]] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > chunked.limit:
                await send_refusal(
                    send, self.too_large(chunked, f"more than {chunked.limit} bytes")
                )
                return None
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> dict[str, Any]:
            m = next(replay, None)
            return m if m is not None else await receive()

        return replayed

    def too_large(self, body_limit: BodyLimit, got: str) -> Refusal:
        """The 413 of a body of ``got`` over ``body_limit``."""
        limit, setting = body_limit.limit, body_limit.setting
        env = LimitSettings.ENV[setting]
        err = PayloadTooLargeError(
            f"the request body is {got}; at most {limit} bytes are allowed here ({setting}, "
            f"set by {env}): send less per request",
            field="body",
            details={"limit": limit, "setting": setting},
        )
        # The client may still be sending: tell it this connection is done.
        return refusal(err, [(b"connection", b"close")])

    def _admit(self, scope: dict[str, Any]) -> Refusal | None:
        path = scope["path"]
        if path in _UNLIMITED_PATHS:
            return None
        client = scope.get("client")
        host = client[0] if client else ""
        if not self.settings.rate_limit_loopback and host in _LOOPBACK:
            return None
        key = _client_key(scope["headers"]) or f"addr:{host}"
        assert self.buckets is not None
        wait = self.buckets.take(key)
        if wait == 0.0:
            return None
        retry = max(1, math.ceil(wait))
        s = self.settings
        who = "API key" if not key.startswith("addr:") else "client address"
        err = RateLimitedError(
            f"too many requests: at most {s.rate_per_s:g} per second (bursts of "
            f"{s.rate_burst}) per {who}; retry after {retry} s",
            details={
                "field": "rate",
                "limit_per_s": s.rate_per_s,
                "burst": s.rate_burst,
                "retry_after_s": retry,
            },
        )
        return refusal(err, [(b"retry-after", str(retry).encode())])


def _client_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-api-key" and value:
            return "key:" + value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return "key:" + value[7:].decode("latin-1").strip()
    return None


def install_limits(app: Any, settings: LimitSettings | None = None) -> LimitSettings:
    """Enforce the body-size and rate limits on ``app`` (``None``: from the environment).

    Returns the settings in force (also kept as ``app.state.limits``).
    """
    s = settings if settings is not None else LimitSettings.from_env()
    app.state.limits = s
    app.add_middleware(LimitsMiddleware, settings=s)
    return s
