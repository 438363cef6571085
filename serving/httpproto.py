"""uvicorn's httptools protocol, leaner for the model server: writes coalesced, and
predictions answered without an ASGI cycle.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and uvloop sends
each at once: two system calls, two TCP segments, two wake-ups of the client. On loopback the
kernel's work for a segment is charged to the sender, and it was the largest single cost of a
one-row prediction here (a third of the server's CPU). :class:`CoalescingHttpToolsProtocol` hands
uvicorn a transport that gathers what is written during one turn of the loop and sends it with one
write at the end of the turn (the head and body of a response; the responses of a pipelined
batch). Latency grows by one turn of the loop (microseconds); 20-40% less CPU per small request
here. Everything else (flow control, closing, extra info) goes straight to the real transport.

:class:`PredictHttpToolsProtocol` (what ``serving.launch.uvicorn_options`` runs) goes further
for the prediction requests of a :class:`serving.app.ServingApp`: it reads the body whole and
has the app answer with plain calls and callbacks instead of an ASGI cycle (a task, coroutines,
message dicts, a header list per response), then writes the response itself; see its docstring.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

__all__ = ["CoalescingHttpToolsProtocol", "PredictHttpToolsProtocol"]


class _CoalescingTransport:
    """A transport whose ``write`` is sent at the end of the current loop turn."""

    __slots__ = ("_transport", "_loop", "_pending", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_whole(self, data: bytes) -> None:
        """Send ``data`` (a whole response) now, after anything written before it this turn."""
        if self._pending:
            self.write(data)
        elif not self._transport.is_closing():
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()  # what was written goes out before the FIN
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, pause_reading, get_extra_info, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` writing through a :class:`_CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- predictions
def _serving_target(app: Any) -> tuple[Any, Any] | None:
    """(the serving app, uvicorn's proxy-header layer or None) when ``app`` (what uvicorn
    runs) is a :class:`serving.app.ServingApp`, bare or behind uvicorn's
    ``ProxyHeadersMiddleware``; None for anything else (then every request goes the ASGI way)."""
    from serving.app import ServingApp

    proxy = None
    if type(app) is ProxyHeadersMiddleware:
        proxy = copy.copy(app)
        proxy.app = _nothing  # what the copy runs after it rewrote the scope
        app = app.app
    return (app, proxy) if isinstance(app, ServingApp) else None


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


def _forwarded(proxy: Any, scope: dict[str, Any]) -> None:
    """Apply uvicorn's proxy-header rules to ``scope`` (client and scheme from a trusted
    proxy's ``X-Forwarded-*``): its own code, which never waits before calling the app."""
    step = proxy(scope, None, None)
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()  # pragma: no cover - a uvicorn whose layer waits
    raise RuntimeError("uvicorn's proxy-header layer waited")


def _scan(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
    """(whether a request's body has a declared length of at most uvicorn's read-ahead limit,
    read whole before anything is answered without pausing the connection; whether it has
    ``X-Forwarded-*`` headers)."""
    small = forwarded = False
    for name, value in headers:
        if name == b"content-length":
            small = value.isdigit() and int(value) <= HIGH_WATER_LIMIT
        elif name == b"transfer-encoding":
            return False, forwarded
        elif name.startswith(b"x-forwarded-"):
            forwarded = True
    return small, forwarded


# The response head's uvicorn part (Server and Date) of the last default-header list uvicorn
# made (it makes one a second, for the date).
_head_of: tuple[Any, bytes] = (None, b"")


def _server_head(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    global _head_of
    seen, head = _head_of
    if seen is not default_headers:
        head = b"".join(b"%s: %s\r\n" % (k, v) for k, v in default_headers)
        _head_of = (default_headers, head)
    return head


class PredictHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` that answers prediction requests without the ASGI
    machinery.

    uvicorn turns every request into an ASGI cycle: a task, a scope walked through each layer
    of middleware, ``receive`` and ``send`` coroutines and their message dicts, the response
    head rebuilt from a header list. For a micro-batched one-row prediction that was about a
    fifth of the server's CPU, besides the loop's task steps. Here a ``POST`` of a small body
    (a declared length up to uvicorn's 64 KiB read-ahead, no ``Expect: 100-continue``) to a
    serving app is read whole first; then
    :meth:`serving.app.ServingApp.answer_now` answers it with plain calls and callbacks (the
    same checks, validation, micro-batcher, metrics and error bodies as the ASGI way), and the
    response is written here. Whatever that cannot answer without waiting (not a prediction, an
    API key not cached, a model still to load, entities to look up) goes on as an ordinary ASGI
    cycle with the body already read: every request gets the same answer either way.

    Kept from uvicorn: keep-alive and ``Connection: close``, HTTP/1.0, pipelined requests in
    order (a request that arrives while one is being answered waits in uvicorn's pipeline), the
    keep-alive timeout, uvicorn's shutdown rule (a connection with an answer pending closes
    after it), the ``Date`` and ``Server`` headers, the access log, and proxy headers (uvicorn's
    own layer, run on the scope). Only with uvicorn's default concurrency (no
    ``limit_concurrency``, whose count is of ASGI tasks). ``benchmarks/README.md`` (Serving)
    has what it saves.
    """

    @staticmethod
    def fits_uvicorn() -> bool:
        """Whether the installed uvicorn has the hooks this class overrides and calls."""
        hooks = ("_start_asgi_task", "on_response_complete", "_unset_keepalive_if_required")
        return all(callable(getattr(HttpToolsProtocol, h, None)) for h in hooks)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        target = _serving_target(self.app) if self.limit_concurrency is None else None
        self._serving, proxy = target if target is not None else (None, None)
        # uvicorn's proxy-header layer, when this client is a proxy it trusts.
        client = self.client[0] if self.client else None
        self._proxy = proxy if proxy is not None and client in proxy.trusted_hosts else None
        self._deferred: tuple[Any, Any, Any] | None = None  # a cycle whose body is still coming
        self._keepalive: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None  # loop time the last response completed, if idle

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        scope = cycle.scope
        if (
            self._serving is not None
            and app is self.app
            and scope["method"] == "POST"
            and not cycle.waiting_for_100_continue
            and scope["path"].endswith(("/predict", "/infer"))
        ):
            small, forwarded = _scan(scope["headers"])
            if small:
                proxy = self._proxy if forwarded else None
                if cycle.more_body:  # the usual case: wait for the body (on_message_complete)
                    self._deferred = (cycle, app, proxy)
                else:  # a pipelined request, read whole while the one before was answered
                    self._answer_now(cycle, app, proxy)
                return
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        deferred = self._deferred
        if deferred is not None and deferred[0] is self.cycle:
            self._deferred = None
            self._answer_now(*deferred)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deferred = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        super().connection_lost(exc)

    # Keep-alive: uvicorn arms a fresh timer after every response and cancels it when the
    # next request arrives (1.9 us a request in-process, against 46 us of server CPU for a
    # whole micro-batched prediction). Here one timer a connection notes when the connection
    # went idle and, when it fires early, waits out the rest: the same timeout, closed at the
    # same moment.
    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def _keepalive_due(self) -> None:
        self._keepalive = None
        since = self._idle_since
        if since is None:  # busy: armed again when its response is complete
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._keepalive = self.loop.call_later(left, self._keepalive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_response_complete(self) -> None:
        # uvicorn's, with the timer above.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._keepalive is None:
            self._keepalive = self.loop.call_later(self.timeout_keep_alive, self._keepalive_due)

    def _answer_now(self, cycle: Any, app: Any, proxy: Any) -> None:
        # A copy: the ASGI way, if it has to answer, starts from uvicorn's scope.
        scope = dict(cycle.scope)
        if proxy is not None:
            _forwarded(proxy, scope)
        body = bytes(cycle.body)
        respond = functools.partial(self._respond, cycle, scope)
        if not self._serving.answer_now(scope, body, respond):
            super()._start_asgi_task(cycle, app)  # its receive() gets the body read so far

    def _respond(
        self,
        cycle: Any,
        scope: dict[str, Any],
        answer: tuple[int, list[tuple[bytes, bytes]], bytes],
    ) -> None:
        """Write a response of ``cycle`` as uvicorn's ``send`` would, then what uvicorn does
        once a response is complete (the next pipelined request, the keep-alive timer)."""
        if cycle.response_complete:
            return
        cycle.response_complete = True
        cycle.message_event.set()
        transport = self.transport
        if transport.is_closing():  # the client went away
            return
        status, headers, body = answer
        content = [STATUS_LINE[status], _server_head(self.server_state.default_headers)]
        closing = False
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                cycle.keep_alive = False
                closing = True
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        transport.write_whole(b"".join(content))
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()
