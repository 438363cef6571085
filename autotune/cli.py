"""The ``autotune`` command line: ``serve``, ``studies list|show|best|delete``, ``run`` and
``keys create|list|revoke``.

Errors print one line to stderr and exit 1 (a failed operation) or 2 (bad usage); never a
traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from autotune.errors import AutotuneError

if TYPE_CHECKING:
    from autotune.client import Client
    from autotune.models import Trial

__all__ = ["cli", "main"]

DB_ENV = "AUTOTUNE_DB"
SERVER_ENV = "AUTOTUNE_SERVER"
API_KEY_ENV = "AUTOTUNE_API_KEY"
AUTH_ENV = "AUTOTUNE_AUTH"
WORKER_HEALTHCHECK_TIMEOUT_S = 60


def _is_loopback(host: str) -> bool:
    from autotune.auth import is_loopback_host

    return is_loopback_host(host)


def _api_key_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--api-key",
        envvar=API_KEY_ENV,
        help=f"API key for --server when it has authentication on [env {API_KEY_ENV}]",
    )(fn)


class _Group(click.Group):
    """Turns every error into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except AutotuneError as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise _Failure(f"{e.code}: {first}") from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise _Failure(f"{type(e).__name__}: {first}") from None


class _Failure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autotune", prog_name="autotune")
@click.option("-v", "--verbose", count=True, help="log more (-v: warnings, -vv: info)")
def cli(verbose: int) -> None:
    """AutoTune: optimization as a service."""
    # Library warnings (a retried database call) would clutter one-line errors; -v shows them.
    level = {0: logging.ERROR, 1: logging.WARNING}.get(verbose, logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("autotune").setLevel(level)


# -- serve ----------------------------------------------------------------------------------
@cli.command()
@click.option("--db", envvar=DB_ENV, help=f"SQLAlchemy URL [env {DB_ENV}; default sqlite]")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--auth/--no-auth",
    default=None,
    help="require an API key on every route but health [default: on unless --host is loopback]",
)
def serve(
    db: str | None, host: str, port: int, workers: int, log_level: str, auth: bool | None
) -> None:
    """Run the REST API (docs at /docs) with uvicorn.

    Authentication is on by default when the server listens beyond this machine (any --host
    but 127.0.0.1, ::1 or localhost): every route but health then needs an API key (make the
    first with `autotune keys create --db ... --project default --scope admin`).
    """
    import uvicorn

    logging.getLogger("autotune").setLevel(log_level.upper())
    if auth is None:
        auth = not _is_loopback(host)
    elif not auth and not _is_loopback(host):
        click.echo(
            f"WARNING: authentication is OFF while listening on {host}: anyone who can reach "
            "this port can read, change and delete every study, model and feature group. "
            "Use --auth (the default off loopback) unless a trusted proxy authenticates.",
            err=True,
        )
    # Read by every worker's app factory.
    os.environ[AUTH_ENV] = "1" if auth else "0"
    if db:
        # Each worker process builds its own app (and database pool) from the environment.
        os.environ[DB_ENV] = db
    if workers > 1:
        # Open the database once here: a bad URL or an unreachable server is one line from
        # this process rather than a traceback from each worker, and migrations run once.
        from autotune.service import StudyService

        StudyService(db).close()
    from serving.launch import uvicorn_options

    uvicorn.run(
        "autotune.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # uvicorn kills a worker that does not answer its health ping within this many seconds,
        # and a worker still importing cannot: its 5 s default is shorter than the app's
        # start-up on a loaded machine, and the workers were then killed and restarted forever.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
        **uvicorn_options(),
    )


# -- studies --------------------------------------------------------------------------------
@cli.group(cls=_Group)
def studies() -> None:
    """Inspect and delete studies."""


def _chosen_server(db: str | None, server: str | None) -> str | None:
    """The server URL a command should use, or None for the embedded database.

    --db and --server exclude each other on the command line; an explicit --db wins over
    AUTOTUNE_SERVER from the environment.
    """
    ctx = click.get_current_context()
    given = {
        p
        for p in ("db", "server")
        if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE
    }
    if given == {"db", "server"}:
        raise click.UsageError("give --db or --server, not both")
    if server and "db" in given:
        return None
    if server and not server.startswith(("http://", "https://")):
        raise click.BadParameter(f"{server!r} is not an http(s):// URL", param_hint="--server")
    return server or None


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --db/--server and passes a connected client as ``client``."""

    @click.option("--db", envvar=DB_ENV, help=f"database URL, embedded [env {DB_ENV}]")
    @click.option("--server", envvar=SERVER_ENV, help=f"server URL, http://... [env {SERVER_ENV}]")
    @_api_key_option
    @wraps(fn)
    def wrapper(db: str | None, server: str | None, api_key: str | None, **kw: Any) -> Any:
        from autotune.client import Client

        server = _chosen_server(db, server)
        if server:
            client = Client(server, retries=2, api_key=api_key or None)
        else:
            if db is not None and "://" not in db:
                raise click.BadParameter(
                    f"{db!r} is not a database URL (e.g. sqlite:///autotune.db)",
                    param_hint="--db",
                )
            client = Client(db=db)
        with client:
            return fn(client=client, **kw)

    return wrapper


@studies.command("list")
@click.option(
    "--state", type=click.Choice(["active", "paused", "completed"]), help="only this state"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_target
def list_cmd(client: Client, state: str | None, as_json: bool) -> None:
    """List studies in creation order."""
    items = client.list_studies(state=state)
    if as_json:
        _echo_json([s.model_dump(mode="json") for s in items])
        return
    if not items:
        click.echo("no studies")
        return
    rows = [
        [
            s.name,
            s.state,
            ", ".join(f"{k} ({v})" for k, v in s.objectives.items()),
            s.n_trials,
            s.max_trials if s.max_trials is not None else "-",
            s.algorithm,
            _time(s.created_at),
        ]
        for s in items
    ]
    click.echo(
        _table(["NAME", "STATE", "OBJECTIVES", "TRIALS", "MAX", "ALGORITHM", "CREATED"], rows)
    )


@studies.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@_target
def show_cmd(client: Client, name: str, as_json: bool) -> None:
    """Show a study: its settings, search space and trial counts."""
    study = client.get_study(name)
    info = study.info
    from autotune.models import TrialState

    counts = {s.value: study.count_trials(s) for s in TrialState}
    if as_json:
        _echo_json({**info.model_dump(mode="json"), "trial_counts": counts})
        return
    fields = [
        ["name", info.name],
        ["state", info.state],
        ["objectives", ", ".join(f"{k} ({v})" for k, v in info.objectives.items())],
        [
            "constraints",
            ", ".join(f"{k} {op} {b:g}" for k, (op, b) in info.constraints.items()) or "-",
        ],
        ["algorithm", info.algorithm],
        ["seed", info.seed],
        ["max trials", info.max_trials if info.max_trials is not None else "-"],
        ["trials", info.n_trials],
        ["created", _time(info.created_at)],
        ["updated", _time(info.updated_at)],
    ]
    click.echo(_table(["FIELD", "VALUE"], fields, header=False))
    click.echo()
    click.echo(_table(["PARAMETER", "TYPE", "DOMAIN", "CONDITION"], _space_rows(info.space)))
    click.echo()
    click.echo(_table(["TRIAL STATE", "COUNT"], [[k, v] for k, v in counts.items()]))


@studies.command("best")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_target
def best_cmd(client: Client, name: str, as_json: bool) -> None:
    """Show the best trial (or the Pareto-optimal trials for several objectives)."""
    study = client.get_study(name)
    best = study.best_trials
    if as_json:
        _echo_json([t.model_dump(mode="json") for t in best])
        return
    if not best:
        click.echo(f"study {name!r} has no completed trial yet")
        return
    click.echo(_table(*_trial_table(best, list(study.objectives))))


@studies.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@_target
def delete_cmd(client: Client, name: str, yes: bool) -> None:
    """Delete a study and all its trials."""
    info = client.get_study(name).info
    if not yes:
        click.confirm(
            f"delete study {name!r} and its {info.n_trials} trial(s)?", abort=True, err=True
        )
    client.delete_study(name)
    click.echo(f"deleted study {name!r}")


# -- run ------------------------------------------------------------------------------------
class _SpecError(click.ClickException):
    """A bad study spec or run setting: one line naming the file and the key; exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@cli.command("run")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(1), help="total trials [default: max_trials]")
@click.option(
    "--workers", type=click.IntRange(1), help="local Dask workers [default: spec, else cores]"
)
@click.option("--scheduler", help="an existing Dask cluster, tcp://host:8786")
@click.option("--server", envvar=SERVER_ENV, help=f"server URL, http://... [env {SERVER_ENV}]")
@click.option("--db", envvar=DB_ENV, help=f"database URL, embedded [env {DB_ENV}]")
@click.option(
    "--register/--no-register",
    default=None,
    help="retrain the best trial, register it, promote it if better [default: spec, on]",
)
@click.option("--alias", help="the alias to promote to [default: spec, production]")
@click.option("--model-name", help="registered model name [default: spec, the study's name]")
@click.option(
    "--artifacts-dir", default="autotune-artifacts", show_default=True, help="trial models"
)
@click.option(
    "--store", envvar="AUTOTUNE_MODEL_STORE", help="registry artifact directory (with --db)"
)
@_api_key_option
def run_cmd(
    spec: str, trials: int | None, workers: int | None, scheduler: str | None,
    server: str | None, db: str | None, register: bool | None, alias: str | None,
    model_name: str | None, artifacts_dir: str, store: str | None, api_key: str | None,
) -> None:  # fmt: skip
    """Run a study spec (studies/*.yaml) on Dask, then register and promote its best model."""
    import time

    # Registers the feature store's training sets as a dataset kind of study specs.
    import serving.features.dataset  # noqa: F401

    # Lazily: the tuning core does not import trainers or serving; the CLI composes them.
    from autotune.client import Client
    from autotune.errors import ValidationError
    from trainers import load_spec, run_study
    from trainers.promote import open_registry, promote_best, promotion_settings

    server = _chosen_server(db, server)
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler, not both")
    if db is not None and "://" not in db:
        raise click.BadParameter(
            f"{db!r} is not a database URL (e.g. sqlite:///autotune.db)", param_hint="--db"
        )
    import distributed  # noqa: F401  (its logging setup first, then ours over it)

    # The cluster's own chatter (workers starting, closing) only with -v, like our warnings.
    logging.getLogger("distributed").setLevel(
        max(logging.getLogger("autotune").getEffectiveLevel(), logging.WARNING)
    )
    start = time.perf_counter()
    try:  # everything about the spec is checked before a cluster starts
        run_spec = load_spec(spec)
        settings = promotion_settings(
            run_spec, register=register, alias=alias, model_name=model_name
        )
        splits = run_spec.load_splits()
    except ValidationError as e:
        raise _SpecError(e.message) from None
    if api_key:  # the registry's HTTP client reads it from the environment too
        os.environ[API_KEY_ENV] = api_key
    client = Client(server, retries=6, api_key=api_key or None) if server else Client(db=db)
    with client:
        try:
            result = run_study(
                run_spec,
                client=client,
                n_trials=trials,
                workers=workers,
                scheduler=scheduler,
                progress=True,
                artifacts_dir=artifacts_dir,
            )
        except ValidationError as e:  # the service refused the spec (same name, other space)
            raise _SpecError(e.message) from None
    click.echo(
        f"study {result.study}: {result.completed} completed, {result.failed} failed, "
        f"{result.pruned} pruned in {result.elapsed_s:.1f} s"
    )
    best = result.best
    if best is None:
        why = "several objectives" if len(run_spec.objectives) > 1 else "no completed trial"
        click.echo(f"no single best trial ({why}): nothing registered")
        return
    values = ", ".join(f"{k} {v:.6g}" for k, v in (best.values or {}).items())
    click.echo(
        f"best trial {best.number}: {values} ("
        + ", ".join(f"{k}={_cell(v)}" for k, v in best.params.items())
        + ")"
    )
    if not settings.register_model:
        return
    registry = open_registry(server or db, store=store)
    try:
        outcome = promote_best(run_spec, best, registry=registry, settings=settings, splits=splits)
    finally:
        registry.close()
    click.echo(outcome.summary())
    click.echo(f"total {time.perf_counter() - start:.1f} s")


# -- keys -----------------------------------------------------------------------------------
@cli.group(cls=_Group)
def keys() -> None:
    """Create, list and revoke API keys (on the database, or on a server with an admin key).

    The first key of a server is made on its database: `autotune keys create --db URL
    --project default --scope admin`. Keys are shown once, at creation; only a hash is kept.
    """


class _Keys:
    """The key commands' backend: the database itself, or a server's /v1/keys routes."""

    def __init__(self, db: str | None, server: str | None, api_key: str | None) -> None:
        self.server = _chosen_server(db, server)
        self._http: Any = None
        self._store: Any = None
        if self.server:
            import httpx

            from autotune.client._auth import auth_headers

            if not (api_key or os.environ.get(API_KEY_ENV)):
                raise click.UsageError(
                    "managing keys over --server needs an admin key: --api-key or "
                    f"{API_KEY_ENV} (or use --db on the server's database)"
                )
            self._http = httpx.Client(
                base_url=self.server.rstrip("/") + "/v1",
                headers=auth_headers(api_key or None),
                timeout=30.0,
            )
        else:
            if db is not None and "://" not in db:
                raise click.BadParameter(
                    f"{db!r} is not a database URL (e.g. sqlite:///autotune.db)",
                    param_hint="--db",
                )
            from autotune.auth import KeyStore
            from autotune.storage import Database, upgrade

            database = Database(db)
            upgrade(database)
            self._store = KeyStore(database)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        from autotune.errors import error_from_payload

        r = self._http.request(method, path, json=body)
        try:
            payload = r.json()
        except ValueError:
            payload = r.text
        if r.status_code >= 400:
            raise error_from_payload(r.status_code, payload)
        return payload

    def create(self, project: str | None, scope: str, name: str | None) -> tuple[Any, str]:
        from autotune.auth import ApiKey

        if self._store is not None:
            if project is None:
                raise click.UsageError("--project is required with --db")
            return self._store.create(project=project, scope=scope, name=name)
        if project is not None:
            # The admin key's own project is in its listing (the key itself is listed).
            mine = {k["project"] for k in self._call("GET", "/keys")["items"]}
            if project not in mine:
                raise click.UsageError(
                    f"the admin key is of project {sorted(mine)[0]!r}: it makes keys of that "
                    f"project only, not {project!r} (use --db for other projects)"
                )
        out = self._call("POST", "/keys", {"scope": scope, "name": name})
        return ApiKey.model_validate(out["info"]), out["key"]

    def list(self, project: str | None) -> list[Any]:
        from autotune.auth import ApiKey

        if self._store is not None:
            return self._store.list(project=project)
        return [ApiKey.model_validate(k) for k in self._call("GET", "/keys")["items"]]

    def revoke(self, key_id: str) -> Any:
        from autotune.auth import ApiKey

        if self._store is not None:
            return self._store.revoke(key_id)
        return ApiKey.model_validate(self._call("DELETE", f"/keys/{key_id}"))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._store is not None:
            self._store.db.dispose()


def _keys_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --db/--server/--api-key and passes a key backend as ``backend``."""

    @click.option("--db", envvar=DB_ENV, help=f"database URL [env {DB_ENV}]")
    @click.option("--server", envvar=SERVER_ENV, help=f"server URL, http://... [env {SERVER_ENV}]")
    @_api_key_option
    @wraps(fn)
    def wrapper(db: str | None, server: str | None, api_key: str | None, **kw: Any) -> Any:
        backend = _Keys(db, server, api_key)
        try:
            return fn(backend=backend, **kw)
        finally:
            backend.close()

    return wrapper


@keys.command("create")
@click.option("--project", help="the key's project (created if new) [--server: the admin key's]")
@click.option(
    "--scope", required=True, type=click.Choice(["read", "write", "admin"]), help="what it may do"
)
@click.option("--name", help="a label for people (who or what uses the key)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_keys_target
def keys_create(
    backend: _Keys, project: str | None, scope: str, name: str | None, as_json: bool
) -> None:
    """Create an API key; its secret is printed this once."""
    info, secret = backend.create(project, scope, name)
    if as_json:
        _echo_json({"key": secret, **info.model_dump(mode="json")})
        return
    click.echo(secret)
    click.echo(
        f"key {info.id}: project {info.project!r}, scope {info.scope.value}. Store the secret "
        "above now: it is not shown again.",
        err=True,
    )


@keys.command("list")
@click.option("--project", help="only this project's keys")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_keys_target
def keys_list(backend: _Keys, project: str | None, as_json: bool) -> None:
    """List API keys (never their secrets), revoked ones too."""
    items = backend.list(project)
    if as_json:
        _echo_json([k.model_dump(mode="json") for k in items])
        return
    if not items:
        click.echo("no keys")
        return
    rows = [
        [
            k.id,
            k.project,
            k.scope.value,
            k.name or "-",
            _time(k.created_at),
            _time(k.revoked_at) if k.revoked_at else "-",
        ]
        for k in items
    ]
    click.echo(_table(["ID", "PROJECT", "SCOPE", "NAME", "CREATED", "REVOKED"], rows))


@keys.command("revoke")
@click.argument("key_id")
@_keys_target
def keys_revoke(backend: _Keys, key_id: str) -> None:
    """Revoke an API key (servers refuse it within a few seconds)."""
    info = backend.revoke(key_id)
    click.echo(f"revoked key {info.id} (project {info.project!r}, scope {info.scope.value})")


# -- formatting -----------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, header: bool = True) -> str:
    """Aligned columns; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(_is_num(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    widths = [
        max([len(h) if header else 0] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = []
    if header:
        out.append(line(list(headers)))
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if hasattr(v, "value") and isinstance(v.value, str):  # enums
        return v.value
    return str(v)


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _space_rows(space: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, p in space.items():
        kind = p.get("type", "?")
        if kind == "categorical":
            domain = "{" + ", ".join(json.dumps(c) for c in p.get("choices", [])) + "}"
        else:
            domain = f"[{p.get('low')}, {p.get('high')}]"
            if p.get("log"):
                domain += " log"
            if p.get("step") not in (None, 1) or (kind == "float" and p.get("step")):
                domain += f" step {p['step']}"
        cond = p.get("condition")
        cond_text = ", ".join(f"{k} in {json.dumps(v)}" for k, v in cond.items()) if cond else "-"
        rows.append([name, kind, domain, cond_text])
    return rows


def _trial_table(trials: Sequence[Trial], objectives: Sequence[str]) -> tuple[list, list]:
    metric_names = list(objectives)
    for t in trials:
        for k in t.values or {}:
            if k not in metric_names:
                metric_names.append(k)
    headers = ["TRIAL", *(m.upper() for m in metric_names), "PARAMS"]
    rows = [
        [
            t.number,
            *((t.values or {}).get(m) for m in metric_names),
            ", ".join(f"{k}={_cell(v)}" for k, v in t.params.items()),
        ]
        for t in trials
    ]
    return headers, rows


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _attach_subsystems() -> None:
    """The CLI is a composition root: the registry and model server commands live in serving."""
    from serving.cli import models, serve_models
    from serving.features.cli import features

    cli.add_command(models)
    cli.add_command(serve_models)
    cli.add_command(features)


_attach_subsystems()


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="autotune")


if __name__ == "__main__":
    main(sys.argv[1:])
