"""API keys and the middleware that checks them.

A key is ``at_`` + 43 random URL-safe characters (256 bits), shown once when it is created; the
database keeps only its SHA-256 (a fast hash is enough for a secret of that entropy: nothing to
brute-force), compared in constant time. Each key belongs to one project and has one scope,
``read`` < ``write`` < ``admin``; revoking it takes effect within :data:`KEY_CACHE_TTL_S`
seconds in every server process (each keeps the keys it verified that long, so the hot path
asks the database at most once per key and period).

With authentication on, :class:`AuthMiddleware` (pure ASGI, so the serving hot path pays a
header scan and a dict lookup) lets through only the health routes without a key; anything
else needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (or, for the dashboard in
a browser, the cookie that ``/?api_key=<key>`` sets, on GET requests only). A missing, unknown
or revoked key gets 401; a key whose scope is too small gets 403. The request then runs in the
key's project (:data:`autotune.projects.current_project`), and model routes see the model's
qualified name (see :mod:`autotune.projects`). With authentication off the middleware is not
installed at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autotune.errors import (
    AutotuneError,
    NotFoundError,
    PermissionDeniedError,
    Refusal,
    UnauthenticatedError,
    ValidationError,
    refusal,
    send_refusal,
)
from autotune.projects import DEFAULT_PROJECT, QUALIFIER, check_project, current_project, qualify
from autotune.storage.engine import Database
from autotune.storage.schema import ApiKeyRow, ProjectRow

__all__ = [
    "Scope",
    "ApiKey",
    "Principal",
    "KeyStore",
    "AuthMiddleware",
    "KEY_PREFIX",
    "KEY_CACHE_TTL_S",
    "API_KEY_ENV",
    "COOKIE_NAME",
    "required_scope",
    "is_loopback_host",
]

KEY_PREFIX = "at_"
API_KEY_ENV = "AUTOTUNE_API_KEY"
COOKIE_NAME = "autotune_api_key"
# How long a process trusts a key it verified: revocation reaches every process within this.
KEY_CACHE_TTL_S = 5.0
# Keys remembered per process (valid and invalid); past it the cache starts over, so a flood of
# made-up keys costs memory no more than this.
_CACHE_MAX = 10_000
_MAX_KEY_NAME = 128
_MAX_TOKEN = 256

_keys = ApiKeyRow.__table__
_projects = ProjectRow.__table__
_K = _keys.c


class Scope(StrEnum):
    """What a key may do; each scope includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


class ApiKey(BaseModel):
    """An API key as listed: everything but the secret."""

    id: str
    project: str
    scope: Scope
    name: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: the key's id, project and scope."""

    key_id: str
    project: str
    scope: Scope


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _scope(scope: Any) -> Scope:
    try:
        return Scope(scope)
    except ValueError:
        raise ValidationError(
            f"scope must be one of {[s.value for s in Scope]}, got {scope!r}", field="scope"
        ) from None


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        project=row.project,
        scope=Scope(row.scope),
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class KeyStore:
    """Create, list, revoke and verify API keys in AutoTune's database. Thread-safe.

    Args:
        db: the database (the service's own, so that keys and studies live together).
        cache_ttl_s: how long a verified (or refused) key is trusted without asking again.
        clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        db: Database,
        *,
        cache_ttl_s: float = KEY_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def create(
        self, *, project: str, scope: Scope | str, name: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key of ``project`` (created if new). Returns the key and its secret, which is
        shown this once and never stored.

        Raises:
            ValidationError: a bad project name, scope or key name.
        """
        check_project(project)
        sc = _scope(scope)
        if name is not None and (
            not isinstance(name, str) or len(name) > _MAX_KEY_NAME or "\x00" in name
        ):
            raise ValidationError(
                f"key name must be a string of at most {_MAX_KEY_NAME} characters", field="name"
            )
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        row = {
            "id": secrets.token_hex(8),
            "project": project,
            "scope": sc.value,
            "name": name,
            "key_hash": _digest(token),
            "created_at": now,
            "revoked_at": None,
        }

        def work(s: Session, _attempt: int) -> None:
            if s.scalar(select(_projects.c.name).where(_projects.c.name == project)) is None:
                try:
                    with s.begin_nested():
                        s.execute(insert(_projects).values(name=project, created_at=now))
                except IntegrityError:  # created concurrently
                    pass
            s.execute(insert(_keys).values(**row))

        self.db.run(work, write=True)
        return _key(_Row(row)), token

    def list(self, *, project: str | None = None) -> list[ApiKey]:
        """Keys (revoked ones too), oldest first; only ``project``'s when given."""
        q = select(_keys).order_by(_K.created_at, _K.id)
        if project is not None:
            q = q.where(_K.project == check_project(project))
        return [_key(r) for r in self.db.run(lambda s, _a: s.execute(q).all(), write=False)]

    def get(self, key_id: str) -> ApiKey:
        row = self.db.run(
            lambda s, _a: s.execute(select(_keys).where(_K.id == str(key_id))).first(),
            write=False,
        )
        if row is None:
            raise NotFoundError(
                f"no API key with id {key_id!r}; `autotune keys list` shows them",
                details={"field": "key_id", "key_id": key_id},
            )
        return _key(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (a no-op for a revoked one); every process refuses it within
        ``cache_ttl_s``, this one at once.

        Raises:
            NotFoundError: no key has that id.
        """
        now = datetime.now(UTC)

        def work(s: Session, _attempt: int) -> None:
            s.execute(
                update(_keys)
                .where(_K.id == str(key_id), _K.revoked_at.is_(None))
                .values(revoked_at=now)
            )

        self.db.run(work, write=True)
        key = self.get(key_id)
        with self._lock:
            self._cache.clear()
        return key

    def verify(self, token: str | None) -> Principal | None:
        """The key's principal, or None for a missing, unknown or revoked key."""
        if not token or len(token) > _MAX_TOKEN or not token.startswith(KEY_PREFIX):
            return None
        digest = _digest(token)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = self.db.run(
            lambda s, _a: s.execute(
                select(_K.id, _K.project, _K.scope, _K.key_hash, _K.revoked_at).where(
                    _K.key_hash == digest
                )
            ).first(),
            write=False,
        )
        principal = None
        if row is not None and row.revoked_at is None and hmac.compare_digest(row.key_hash, digest):
            principal = Principal(key_id=row.id, project=row.project, scope=Scope(row.scope))
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (principal, now + self.cache_ttl_s)
        return principal

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(known, principal) from the cache alone: lets the middleware skip a thread hop."""
        hit = self._cache.get(_digest(token)) if token else None
        if hit is not None and hit[1] > self._clock():
            return True, hit[0]
        return False, None


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def is_loopback_host(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only (``serve`` turns
    authentication on by default for any other address, host names included)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


# ------------------------------------------------------------------------------- middleware

# Health answers without a key (load balancers, orchestrators).
_PUBLIC = re.compile(r"^/(v1/health(/.*)?|v2/health/(live|ready))$")
# POSTs that only read: predictions and online feature lookups.
_READ_POSTS = re.compile(
    r"^/(v1/models/[^/]+(/versions/[^/]+)?/predict|v2/models/[^/]+(/versions/[^/]+)?/infer"
    r"|v1/feature-groups/[^/]+/online)$"
)
# Server-wide views: an admin key of the default project (the operator's) only.
_OPERATOR = re.compile(r"^/(metrics|v1/serving/status)$")
_ADMIN = re.compile(r"^/v1/keys(/.*)?$")
# Model routes whose name segment is qualified with the project.
_MODEL_PATH = re.compile(r"^(/v[12]/models/)([^/]+)(/.*)?$")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Rule:
    """What the middleware does with one (method, path), worked out once."""

    public: bool
    need: Scope
    operator: bool
    model: tuple[str, str, str] | None  # (prefix, name, rest) of a model route


def _rule(method: str, path: str) -> _Rule:
    m = _MODEL_PATH.match(path)
    return _Rule(
        public=bool(_PUBLIC.match(path)),
        need=required_scope(method, path),
        operator=bool(_OPERATOR.match(path)),
        model=(m.group(1), m.group(2), m.group(3) or "") if m else None,
    )


# Distinct (method, path) decisions kept per process; past it the cache starts over.
_RULES_MAX = 4096


def required_scope(method: str, path: str) -> Scope:
    """The scope a request needs: admin for keys and server-wide views, read for reads (GET,
    predictions, online lookups), write for anything else."""
    if _OPERATOR.match(path) or _ADMIN.match(path):
        return Scope.ADMIN
    if method in _SAFE_METHODS or _READ_POSTS.match(path):
        return Scope.READ
    return Scope.WRITE


def _header_token(headers: list[tuple[bytes, bytes]], method: str) -> str | None:
    cookie = None
    for k, v in headers:
        if k == b"authorization":
            scheme, _, value = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        elif k == b"x-api-key":
            return v.decode("latin-1").strip()
        elif k == b"cookie" and method in _SAFE_METHODS:
            # Only for reads: a cookie rides along on cross-site requests (SameSite guards too).
            for part in v.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE_NAME and value:
                    cookie = value
    return cookie


class AuthMiddleware:
    """Pure ASGI middleware: authenticate, authorize by scope, run the request in the key's
    project.

    :meth:`check` is the whole decision, for a layer in front of this one that answers some
    requests on its own (the serving fast path) and must authorize them exactly as this
    middleware does.

    Args:
        app: the ASGI app.
        keys: where keys are verified.
    """

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys
        # The hot path (a cached key on a known route) is a few dict lookups, no regex.
        self._rules: dict[tuple[str, str], _Rule] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer, scope, principal = await self.check(scope)
        if answer is not None:
            await send_refusal(send, answer)
            return
        if principal is None:  # a public route
            await self.app(scope, receive, send)
            return
        reset = current_project.set(principal.project)
        try:
            await self.app(scope, receive, send)
        finally:
            current_project.reset(reset)

    async def check(
        self, scope: MutableMapping[str, Any]
    ) -> tuple[Refusal | None, MutableMapping[str, Any], Principal | None]:
        """Decide an HTTP request.

        Returns:
            (answer, scope, principal): the response to send instead of running the app
            (401, 403, 404 for a qualified model name, 503 when keys cannot be verified, the
            dashboard login's redirect), or None; the scope to run the app with (a model
            route's name qualified with the key's project, ``state["principal"]`` set); and the
            principal, whose project the app must run in (None for a public route).
        """
        rule, token, login = self._prepare(scope)
        if rule.public:
            return None, scope, None
        try:
            principal = await self._verify(token)
        except AutotuneError as e:  # the database is down: 503 like any other route
            return refusal(e, [(b"retry-after", b"1")] if e.retryable else []), scope, None
        return self._decide(scope, rule, token, login, principal)

    def check_now(
        self, scope: MutableMapping[str, Any]
    ) -> tuple[Refusal | None, MutableMapping[str, Any], Principal | None] | None:
        """:meth:`check` when it can decide without waiting (a public route, no key, or a key
        in the cache), else None: then only :meth:`check` can, and nothing was changed."""
        rule, token, login = self._prepare(scope)
        if rule.public:
            return None, scope, None
        known, principal = self.keys.cached(token) if token else (True, None)
        if not known:
            return None
        return self._decide(scope, rule, token, login, principal)

    def _prepare(self, scope: MutableMapping[str, Any]) -> tuple[_Rule, str | None, str | None]:
        """(the route's rule, the token sent, the dashboard login's key) of a request."""
        path: str = scope["path"]
        method: str = scope["method"]
        rule = self._rules.get((method, path))
        if rule is None:
            rule = _rule(method, path)
            if len(self._rules) >= _RULES_MAX:
                self._rules.clear()
            self._rules[(method, path)] = rule
        if rule.public:
            return rule, None, None
        token = _header_token(scope.get("headers") or [], method)
        login = None
        if path == "/" and method == "GET" and scope.get("query_string"):
            login = parse_qs(scope["query_string"].decode("latin-1")).get("api_key", [None])[0]
            token = login or token
        return rule, token, login

    def _decide(
        self,
        scope: MutableMapping[str, Any],
        rule: _Rule,
        token: str | None,
        login: str | None,
        principal: Principal | None,
    ) -> tuple[Refusal | None, MutableMapping[str, Any], Principal | None]:
        """:meth:`check`'s answer once the key is verified (``principal``: None if it is not)."""
        path: str = scope["path"]
        method: str = scope["method"]
        if principal is None:
            err = UnauthenticatedError(
                "a valid API key is required: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>' (the dashboard: open /?api_key=<key> once); "
                "`autotune keys create` makes one"
                if token is None
                else "the API key is unknown or revoked",
                details={},
            )
            return refusal(err, [(b"www-authenticate", b"Bearer")]), scope, None
        if login is not None:  # the dashboard's login: keep the key in a cookie, drop the query
            cookie = f"{COOKIE_NAME}={login}; Path=/; HttpOnly; SameSite=Strict"
            headers = [
                (b"location", b"/"),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"content-length", b"0"),
            ]
            return (303, headers, b""), scope, None
        need = rule.need
        if _RANK[principal.scope] < _RANK[need] or (
            rule.operator and principal.project != DEFAULT_PROJECT
        ):
            who = (
                "an admin key of the default project"
                if rule.operator
                else f"a key with scope {need.value!r}"
            )
            err = PermissionDeniedError(
                f"{method} {path} needs {who}; this key is {principal.scope.value!r} in "
                f"project {principal.project!r}",
                details={"scope": principal.scope.value, "required": need.value},
            )
            return refusal(err, []), scope, None
        if rule.model is not None:
            prefix, name, rest = rule.model
            if QUALIFIER in name:  # only the middleware qualifies names
                err = NotFoundError(f"model {name!r} not found", details={"model": name})
                return refusal(err, []), scope, None
            if principal.project != DEFAULT_PROJECT:
                path = prefix + qualify(principal.project, name) + rest
                scope = dict(scope)
                scope["path"] = path
                scope["raw_path"] = path.encode()
        state = scope.setdefault("state", {})
        state["principal"] = principal
        return None, scope, principal

    async def _verify(self, token: str | None) -> Principal | None:
        if not token:
            return None
        known, principal = self.keys.cached(token)
        if known:
            return principal
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.keys.verify, token)
