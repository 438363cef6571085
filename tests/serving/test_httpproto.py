"""The coalescing httptools protocol on a real uvicorn server on loopback: whole responses,
streamed ones, keep-alive and connection: close all arrive intact."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from serving.launch import uvicorn_options

pytest.importorskip("httptools")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0.01)  # chunks in different loop turns
        await send({"type": "http.response.body", "body": b"end"})
        return
    out = b"echo:" + body
    headers = [(b"content-length", str(len(out)).encode())]
    if scope["path"] == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = uvicorn_options()
    assert not isinstance(opts["http"], str)  # the coalescing protocol is what runs
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **opts)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_responses_arrive_whole(url):
    with httpx.Client(base_url=url) as c:  # one keep-alive connection
        for i in range(50):
            r = c.post("/", content=b"x" * i)
            assert r.status_code == 200 and r.content == b"echo:" + b"x" * i
        big = b"y" * 3_000_000
        assert c.post("/", content=big).content == b"echo:" + big
        r = c.get("/stream")
        assert r.status_code == 200 and r.content == b"part0;part1;part2;end"
        r = c.post("/close", content=b"bye")
        assert r.content == b"echo:bye" and r.headers["connection"] == "close"
        assert c.post("/", content=b"again").content == b"echo:again"  # a new connection


def test_concurrent_clients(url):
    errors: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=url) as c:
            for i in range(30):
                body = f"{k}-{i}".encode()
                r = c.post("/", content=body)
                if r.content != b"echo:" + body:
                    errors.append(f"{k}-{i}: {r.content!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
