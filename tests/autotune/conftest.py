"""Fixtures for the API, client and CLI tests: real uvicorn servers in subprocesses, and a
``client`` that runs the same test over both transports and both databases.

The servers are ``python -m autotune.cli serve`` on a free loopback port, as a user runs them;
the session-wide ones are shared by every test on that database (tests use unique study names).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from autotune.client import Client

REPO = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 60.0  # imports and migrations on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``autotune serve`` in a subprocess: start, wait until healthy, kill, restart."""

    def __init__(self, db_url: str, log_dir: Path, *, port: int | None = None) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.log_path = log_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, workers: int = 1) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if k not in ("AUTOTUNE_DB",)}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            sys.executable, "-m", "autotune.cli", "serve",
            "--db", self.db_url, "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not healthy in {SERVER_START_TIMEOUT_S}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers for this test (``start_server(db_url)``); all stopped at teardown."""
    servers: list[ServerProcess] = []

    def start(db_url: str, *, port: int | None = None, workers: int = 1) -> ServerProcess:
        server = ServerProcess(db_url, tmp_path, port=port)
        servers.append(server)
        return server.start(workers=workers)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def _session_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('server-sqlite') / 'autotune.db'}"


def _session_server(db_url: str, tmp: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(db_url, tmp.mktemp("server-logs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_server(
    _session_sqlite_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server on a SQLite file, shared by the session's tests."""
    yield from _session_server(_session_sqlite_url, tmp_path_factory)


@pytest.fixture(scope="session")
def postgres_server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server on the session's PostgreSQL database."""
    yield from _session_server(postgres_url, tmp_path_factory)


@pytest.fixture
def server_url(sqlite_server: ServerProcess) -> str:
    """Base URL of a running server (SQLite), for raw HTTP tests."""
    return sqlite_server.url


TRANSPORT_PARAMS = [
    pytest.param(("embedded", "sqlite"), id="embedded-sqlite"),
    pytest.param(("http", "sqlite"), id="http-sqlite"),
    pytest.param(("embedded", "postgres"), id="embedded-postgres", marks=pytest.mark.postgres),
    pytest.param(("http", "postgres"), id="http-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=TRANSPORT_PARAMS)
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """The same test through each transport on each database."""
    transport, db = request.param
    if transport == "embedded":
        c = Client(db=request.getfixturevalue(f"{db}_url"))
    else:
        c = Client(request.getfixturevalue(f"{db}_server").url)
    try:
        yield c
    finally:
        c.close()
