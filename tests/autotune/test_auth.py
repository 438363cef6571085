"""Authentication against a real ``autotune serve --auth`` on loopback (SQLite and PostgreSQL):
401 without a key or with an unknown or revoked one, 403 for a scope too small, projects that
keep their studies apart (the same study name in two of them), the client's ``api_key=`` and
``AUTOTUNE_API_KEY``, the CLI's ``keys create|list|revoke`` and the dashboard's cookie login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from autotune.auth import KEY_CACHE_TTL_S, KeyStore, required_scope
from autotune.client import Client
from autotune.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    ValidationError,
)
from autotune.storage import Database, upgrade

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    full.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "autotune.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=120,
    )


@dataclass
class AuthServer:
    url: str
    db_url: str
    proc: subprocess.Popen[bytes]
    keys: dict[str, str]  # "a_admin", "a_write", "a_read", "b_write", ... -> secret
    key_ids: dict[str, str]


def start_auth_server(db_url: str, tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    env.update(PYTHONPATH=str(REPO), AUTOTUNE_MODEL_STORE=str(tmp / "store"))
    log = open(tmp / f"server-{port}.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "serve", "--db", db_url, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / f"server-{port}.log").read_text()[-3000:])
        try:
            if httpx.get(proc.url + "/v1/health", timeout=2).status_code == 200:  # type: ignore[attr-defined]
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    tmp = tmp_path_factory.mktemp("auth")
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp / 'autotune.db'}"
    else:
        db_url = request.getfixturevalue("postgres_databases").create()
    # The operator's first key comes from the CLI, on the database itself.
    out = _cli("keys", "create", "--db", db_url, "--project", "team-a", "--scope", "admin",
               "--name", "ops", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    db = Database(db_url)
    upgrade(db)
    store = KeyStore(db)
    keys, ids = {"a_admin": first["key"]}, {"a_admin": first["id"]}
    for label, project, scope in [
        ("a_write", "team-a", "write"),
        ("a_read", "team-a", "read"),
        ("b_write", "team-b", "write"),
        ("b_read", "team-b", "read"),
        ("revoked", "team-a", "admin"),
        ("default_admin", "default", "admin"),
    ]:
        info, secret = store.create(project=project, scope=scope, name=label)
        keys[label], ids[label] = secret, info.id
    db.dispose()
    proc = start_auth_server(db_url, tmp, "--auth")
    try:
        yield AuthServer(proc.url, db_url, proc, keys, ids)  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_unknown_key_and_revoked_key_are_401(server: AuthServer) -> None:
    for headers in (
        {},
        _h("at_not-a-real-key"),
        {"X-API-Key": "nonsense"},
        {"Authorization": "Basic x"},
    ):
        r = httpx.get(server.url + "/v1/studies", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
    # Health answers without a key (load balancers).
    assert httpx.get(server.url + "/v1/health").status_code == 200
    # A key works, then is revoked (by the CLI, on the database), then refused within the TTL.
    revoked = server.keys["revoked"]
    assert httpx.get(server.url + "/v1/studies", headers=_h(revoked)).status_code == 200
    out = _cli("keys", "revoke", server.key_ids["revoked"], "--db", server.db_url)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + KEY_CACHE_TTL_S + 5
    while httpx.get(server.url + "/v1/studies", headers=_h(revoked)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works after the cache TTL"
        time.sleep(0.2)
    r = httpx.get(server.url + "/v1/studies", headers={"X-API-Key": revoked})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_scopes_read_write_admin(server: AuthServer, unique_name: str) -> None:
    spec = {"name": unique_name, "space": SPACE, "algorithm": "random"}
    r = httpx.post(server.url + "/v1/studies", json=spec, headers=_h(server.keys["a_read"]))
    assert r.status_code == 403, r.text
    assert r.json()["error"] == {
        "code": "permission_denied",
        "message": r.json()["error"]["message"],
        "details": {"scope": "read", "required": "write"},
    }
    r = httpx.post(server.url + "/v1/studies", json=spec, headers=_h(server.keys["a_write"]))
    assert r.status_code == 201, r.text
    # read: every GET; write: changes; admin: keys. /metrics: the default project's admin.
    assert httpx.get(
        server.url + f"/v1/studies/{unique_name}", headers=_h(server.keys["a_read"])
    ).is_success
    for key, status in [("a_write", 403), ("a_admin", 200)]:
        assert httpx.get(server.url + "/v1/keys", headers=_h(server.keys[key])).status_code == (
            status
        )
    assert httpx.get(server.url + "/metrics", headers=_h(server.keys["a_admin"])).status_code == 403
    r = httpx.get(server.url + "/metrics", headers=_h(server.keys["default_admin"]))
    assert r.status_code == 200
    assert required_scope("POST", "/v1/models/m/predict").value == "read"
    assert required_scope("POST", "/v1/studies/s/suggest").value == "write"


def test_two_projects_use_the_same_study_name_apart(server: AuthServer, unique_name: str) -> None:
    with (
        Client(server.url, api_key=server.keys["a_write"], retries=1) as a,
        Client(server.url, api_key=server.keys["b_write"], retries=1) as b,
    ):
        sa = a.create_study(unique_name, SPACE, algorithm="random", seed=1)
        sb = b.create_study(unique_name, SPACE, algorithm="random", seed=2)
        assert sa.info.id != sb.info.id
        t = sa.suggest()[0]
        sa.observe(t, {"value": 0.5})
        assert sa.info.n_trials == 1 and b.get_study(unique_name).info.n_trials == 0
        assert unique_name in {s.name for s in a.list_studies()}
        assert [s.id for s in b.list_studies() if s.name == unique_name] == [sb.info.id]
        b.delete_study(unique_name)
        assert a.get_study(unique_name).info.n_trials == 1  # A's study is untouched
        with pytest.raises(NotFoundError):
            b.get_study(unique_name)


def test_an_embedded_client_works_in_the_project_the_server_scopes_a_key_to(
    server: AuthServer, unique_name: str
) -> None:
    """``Client(db=..., project=...)`` on the server's own database: what it creates in
    team-a is what a team-a key sees over HTTP, and team-b's key and the default project
    don't."""
    with Client(db=server.db_url, project="team-a") as embedded:
        study = embedded.create_study(unique_name, SPACE, algorithm="random", seed=3)
        study.observe(study.suggest()[0], {"value": 0.25})
        assert embedded.transport.project == "team-a"  # type: ignore[attr-defined]
    with Client(server.url, api_key=server.keys["a_read"], retries=1) as a:
        seen = a.get_study(unique_name)
        assert seen.info.id == study.info.id and seen.info.n_trials == 1
    b = Client(server.url, api_key=server.keys["b_read"], retries=1)
    with b, pytest.raises(NotFoundError):
        b.get_study(unique_name)
    with Client(db=server.db_url) as default:
        assert unique_name not in {s.name for s in default.list_studies()}
    other = Client(db=server.db_url, project="team-b")
    with other, pytest.raises(NotFoundError):
        other.get_study(unique_name)


def test_client_project_is_checked_and_only_for_the_embedded_service(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        Client(db=f"sqlite:///{tmp_path / 'x.db'}", project="../etc")
    assert err.value.field == "project"
    with pytest.raises(ValueError, match="API key"):
        Client("http://127.0.0.1:1", project="team-a")


def test_client_errors_and_environment_key(
    server: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOTUNE_API_KEY", raising=False)
    with Client(server.url, retries=0) as c, pytest.raises(UnauthenticatedError):
        c.list_studies()
    with (
        Client(server.url, api_key=server.keys["a_read"], retries=0) as c,
        pytest.raises(PermissionDeniedError),
    ):
        c.create_study("nope", SPACE)
    monkeypatch.setenv("AUTOTUNE_API_KEY", server.keys["a_read"])
    with Client(server.url, retries=0) as c:
        c.list_studies()
    # The CLI's --server commands pass the key along too.
    out = _cli("studies", "list", "--server", server.url, "--json",
               env={"AUTOTUNE_API_KEY": server.keys["a_read"]})  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = _cli("studies", "list", "--server", server.url)
    assert out.returncode == 1 and "unauthenticated" in out.stderr


def test_keys_over_http_and_cli(server: AuthServer) -> None:
    admin = server.keys["a_admin"]
    out = _cli("keys", "create", "--server", server.url, "--api-key", admin, "--scope", "read",
               "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["project"] == "team-a" and made["key"].startswith("at_")
    listed = _cli("keys", "list", "--server", server.url, "--api-key", admin, "--json")
    ids = {k["id"]: k for k in json.loads(listed.stdout)}
    assert made["id"] in ids and all(k["project"] == "team-a" for k in ids.values())
    assert "key" not in ids[made["id"]] and "key_hash" not in ids[made["id"]]
    # Another project's key is not found through this project's admin key.
    r = httpx.delete(server.url + f"/v1/keys/{server.key_ids['b_write']}", headers=_h(admin))
    assert r.status_code == 404
    # An admin key makes keys of its own project only.
    out = _cli("keys", "create", "--server", server.url, "--api-key", admin, "--scope", "admin",
               "--project", "team-b")  # fmt: skip
    assert out.returncode == 2 and "team-a" in out.stderr, out.stderr
    out = _cli("keys", "revoke", made["id"], "--server", server.url, "--api-key", admin)
    assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
    everything = _cli("keys", "list", "--db", server.db_url)
    assert "team-b" in everything.stdout and made["id"] in everything.stdout


def test_dashboard_needs_a_key_and_logs_in_with_a_cookie(server: AuthServer) -> None:
    assert httpx.get(server.url + "/").status_code == 401
    assert httpx.get(server.url + "/dashboard/api/studies").status_code == 401
    with httpx.Client(base_url=server.url) as browser:
        r = browser.get("/", params={"api_key": server.keys["a_read"]})
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "HttpOnly" in r.headers["set-cookie"]
        assert browser.get("/").status_code == 200
        studies = browser.get("/dashboard/api/studies")
        assert studies.status_code == 200
        # The cookie never authorizes a change (a cross-site form could send it).
        r = browser.post("/v1/studies", json={"name": "x", "space": SPACE})
        assert r.status_code == 401


def test_auth_is_on_by_default_off_loopback(tmp_path: Path) -> None:
    from autotune.cli import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("10.1.2.3")
    assert not _is_loopback("example.com")
    db_url = f"sqlite:///{tmp_path / 'autotune.db'}"
    # --host 0.0.0.0 with no flag: a key is required (asked over loopback all the same).
    proc = start_auth_server(db_url, tmp_path, "--host", "0.0.0.0")
    try:
        assert httpx.get(proc.url + "/v1/studies").status_code == 401  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # --no-auth forces it off, loudly.
    proc = start_auth_server(db_url, tmp_path, "--host", "0.0.0.0", "--no-auth")
    try:
        assert httpx.get(proc.url + "/v1/studies").status_code == 200  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
    assert "WARNING: authentication is OFF while listening on 0.0.0.0" in logs


def test_an_unreachable_database_is_503_not_500() -> None:
    """Verifying a key the process has not seen needs the database: when it is down the
    answer is the usual retryable 503, in the usual JSON shape."""
    import asyncio

    from autotune.auth import AuthMiddleware

    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/none")  # nothing listens there
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def app(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("the request must not get past authentication")

    scope = {"type": "http", "method": "GET", "path": "/v1/studies", "query_string": b"",
             "headers": [(b"x-api-key", b"at_unseen")]}  # fmt: skip
    try:
        asyncio.run(AuthMiddleware(app, KeyStore(db))(scope, receive, send))
    finally:
        db.dispose()
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "unavailable"
