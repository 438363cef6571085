"""What the request-limits middleware (autotune/api/limits.py) adds to one request, in-process.

A trivial ASGI app answers a predict-like ``POST`` (Content-Length, an API key header, six
headers in all) alone and wrapped in :class:`LimitsMiddleware`: with rate limiting off, with the
defaults for a loopback client (exempt), and for a remote client's key (a token-bucket take). No sockets, so the difference is the middleware's own cost; compare it with
a predict request's latency (``benchmarks/serving.py``). Each variant runs ``--n`` requests per
round; the median of ``--rounds`` interleaved rounds is reported.

Usage: ``python benchmarks/limits_overhead.py [--n 100000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from autotune.api.limits import LimitSettings, LimitsMiddleware


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


def _scope(client: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/m/infer",
        "client": (client, 5555),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"python-httpx/0.28"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/json"),
            (b"x-api-key", b"k1"),
            (b"content-length", b"2"),
        ],
    }


async def _per_request_us(target: Any, scope: dict[str, Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await target(scope, _receive, _send)
    return (time.perf_counter() - t0) / n * 1e6


async def main(n: int, rounds: int) -> None:
    admit_all = LimitSettings(rate_per_s=1e9, rate_burst=10**9)  # every request admitted
    variants = {
        "bare app": (_app, "127.0.0.1"),
        "limits, rate off": (LimitsMiddleware(_app, LimitSettings(rate_per_s=0)), "127.0.0.1"),
        "limits default, loopback client": (LimitsMiddleware(_app, LimitSettings()), "127.0.0.1"),
        "limits, remote key (bucket taken)": (LimitsMiddleware(_app, admit_all), "10.0.0.7"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (target, client) in variants.items():
            times[name].append(await _per_request_us(target, _scope(client), n))
    bare = statistics.median(times["bare app"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:36s} {m:7.2f} us/request  (+{m - bare:5.2f} us)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.n, a.rounds))
