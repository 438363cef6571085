"""``autotune models list|show|promote|rollback|history`` and ``autotune serve-models``.

Both work on the registry directly (``--db``, the studies' database, and ``--store``); attach them
to the main CLI with ``cli.add_command(models)`` and ``cli.add_command(serve_models)``, or run
them standalone: ``python -m serving.cli models list``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["models", "serve_models", "cli", "main"]

_db_option = click.option(
    "--db", envvar="AUTOTUNE_DB", default=None, help="SQLAlchemy URL of the studies' database."
)
_store_option = click.option(
    "--store", envvar="AUTOTUNE_MODEL_STORE", default=None, help="Artifact store directory."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _registry(db: str | None, store: str | None) -> Any:
    from serving.registry import ModelRegistry

    return ModelRegistry(db, store=store)


def _run(fn: Callable[[], Any]) -> Any:
    from autotune.errors import AutotuneError

    try:
        return fn()
    except AutotuneError as e:
        raise click.ClickException(str(e)) from None


def _echo_json(obj: Any) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    click.echo(json.dumps(obj, indent=2, default=str))


def _event_line(e: Any) -> str:
    when = e.created_at.strftime("%Y-%m-%d %H:%M:%S")
    frm = "-" if e.from_version is None else f"v{e.from_version}"
    to = "-" if e.to_version is None else f"v{e.to_version}"
    return f"{when}  {e.alias:<12} {frm:>5} -> {to:<5} by {e.actor}  ({e.reason or ''})"


@click.group()
def models() -> None:
    """Registered models: versions, aliases, promotion and rollback."""


@models.command("list")
@_db_option
@_store_option
@_json_option
def list_cmd(db: str | None, store: str | None, as_json: bool) -> None:
    """Every model with its versions and aliases."""
    reg = _registry(db, store)
    try:
        items = _run(reg.list_models)
    finally:
        reg.close()
    if as_json:
        _echo_json(items)
        return
    if not items:
        click.echo("no models registered")
        return
    click.echo(f"{'MODEL':<32} {'LATEST':>6}  {'VERSIONS':>8}  ALIASES")
    for m in items:
        aliases = ", ".join(f"{a}=v{v}" for a, v in m.aliases.items()) or "-"
        click.echo(
            f"{m.name:<32} {('v' + str(m.latest_version)):>6}  {len(m.versions):>8}  {aliases}"
        )


@models.command("show")
@click.argument("name")
@click.argument("version", required=False)
@_db_option
@_store_option
@_json_option
def show_cmd(
    name: str, version: str | None, db: str | None, store: str | None, as_json: bool
) -> None:
    """A model (versions, alias history, promotion decisions), or one VERSION (number or alias)."""
    reg = _registry(db, store)
    try:
        if version is not None:
            v = _run(lambda: reg.get_version(name, version))
            if as_json:
                _echo_json(v)
                return
            click.echo(f"{v.name} v{v.version}  aliases: {', '.join(v.aliases) or '-'}")
            click.echo(
                f"  artifact: {v.artifact.format} sha256:{v.artifact.sha256} ({v.artifact.size} bytes)"
            )
            click.echo(f"  metrics:  {json.dumps(v.metrics)}")
            click.echo(f"  params:   {json.dumps(v.params, default=str)}")
            lineage = {k: x for k, x in v.lineage.model_dump().items() if x is not None}
            click.echo(f"  lineage:  {json.dumps(lineage, default=str)}")
            click.echo(f"  inputs:   {', '.join(f'{f.name}:{f.type}' for f in v.signature.inputs)}")
            click.echo(f"  created:  {v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}")
            return
        m = _run(lambda: reg.get_model(name))
    finally:
        reg.close()
    if as_json:
        _echo_json(m)
        return
    aliases = ", ".join(f"{a}=v{v}" for a, v in m.aliases.items()) or "-"
    click.echo(f"{m.name}  aliases: {aliases}")
    click.echo("versions:")
    for v in m.model_versions:
        mets = " ".join(f"{k}={x:.4g}" for k, x in v.metrics.items())
        tags = f"  [{', '.join(v.aliases)}]" if v.aliases else ""
        click.echo(
            f"  v{v.version:<4} {v.created_at:%Y-%m-%d %H:%M}  {v.artifact.format:<14} {mets}{tags}"
        )
    if m.history:
        click.echo("alias history (newest first):")
        for e in m.history:
            click.echo("  " + _event_line(e))
    if m.comparisons:
        click.echo("promotion decisions (newest first):")
        for c in m.comparisons:
            verdict = "promoted" if c.promoted else "kept holder"
            click.echo(f"  v{c.candidate_version} for {c.alias}: {verdict}: {c.reason}")


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default=None, help="Why (kept in the alias history).")
@click.option("--if-better", "metric", default=None, help="Promote only if better on METRIC.")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default=None)
@_db_option
@_store_option
def promote_cmd(
    name: str, version: int, alias: str, reason: str | None, metric: str | None,
    direction: str | None, db: str | None, store: str | None,
) -> None:  # fmt: skip
    """Point ALIAS (default production) at VERSION of NAME."""
    reg = _registry(db, store)
    try:
        if metric is not None:
            if direction is None:
                raise click.UsageError("--if-better needs --direction minimize|maximize")
            r = _run(
                lambda: reg.promote_if_better(
                    name, version, alias, metric=metric, direction=direction
                )
            )
            verdict = "promoted" if r.promoted else "not promoted"
            click.echo(f"{name} v{version} {verdict} to {alias}: {r.comparison.reason}")
            return
        e = _run(lambda: reg.promote(name, version, alias, reason=reason))
    finally:
        reg.close()
    click.echo(f"{name}: {_event_line(e)}")


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@_db_option
@_store_option
def rollback_cmd(name: str, alias: str, db: str | None, store: str | None) -> None:
    """Undo the last move of ALIAS (it returns to the version it held before)."""
    reg = _registry(db, store)
    try:
        e = _run(lambda: reg.rollback(name, alias))
    finally:
        reg.close()
    click.echo(f"{name}: {_event_line(e)}")


@models.command("history")
@click.argument("name")
@click.option("--alias", default=None, help="Only this alias.")
@_db_option
@_store_option
@_json_option
def history_cmd(
    name: str, alias: str | None, db: str | None, store: str | None, as_json: bool
) -> None:
    """Every alias move of NAME: who, when, from, to, why."""
    reg = _registry(db, store)
    try:
        events = _run(lambda: reg.history(name, alias))
    finally:
        reg.close()
    if as_json:
        _echo_json(events)
        return
    for e in events:
        click.echo(_event_line(e))


@click.command("serve-models")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@_db_option
@_store_option
@click.option("--serving-only", is_flag=True, help="Predict and read routes only (replicas).")
@click.option("--workers", default=1, show_default=True, type=int)
@click.option("--batching/--no-batching", default=True, show_default=True)
@click.option("--max-batch", default=256, show_default=True, type=int, help="Rows per model call.")
@click.option(
    "--max-wait-ms", default=0.0, show_default=True, type=float, help="Wait for a fuller batch."
)
@click.option("--max-queue", default=1024, show_default=True, type=int, help="Then 503.")
@click.option("--poll-s", default=1.0, show_default=True, type=float, help="Alias poll interval.")
@click.option(
    "--log-sample", default=0.0, show_default=True, type=float, help="Predictions logged."
)
@click.option("--log-level", default="warning", show_default=True)
@click.option(
    "--auth/--no-auth",
    default=None,
    help="require an API key on every route but health [default: on unless --host is loopback]",
)
def serve_models(
    host: str, port: int, db: str | None, store: str | None, serving_only: bool, workers: int,
    batching: bool, max_batch: int, max_wait_ms: float, max_queue: int, poll_s: float,
    log_sample: float, log_level: str, auth: bool | None,
) -> None:  # fmt: skip
    """Run the model server (Open Inference Protocol /v2 and /v1 model routes)."""
    import uvicorn

    from autotune.auth import is_loopback_host

    if auth is None:
        auth = not is_loopback_host(host)
    elif not auth and not is_loopback_host(host):
        click.echo(
            f"WARNING: authentication is OFF while listening on {host}: anyone who can reach "
            "this port can read every model and move its aliases.",
            err=True,
        )

    env = {
        "AUTOTUNE_DB": db,
        "AUTOTUNE_MODEL_STORE": store,
        "AUTOTUNE_SERVING_ONLY": "1" if serving_only else "0",
        "AUTOTUNE_SERVING_BATCHING": "1" if batching else "0",
        "AUTOTUNE_SERVING_MAX_BATCH": str(max_batch),
        "AUTOTUNE_SERVING_MAX_WAIT_MS": str(max_wait_ms),
        "AUTOTUNE_SERVING_MAX_QUEUE": str(max_queue),
        "AUTOTUNE_SERVING_POLL_S": str(poll_s),
        "AUTOTUNE_SERVING_LOG_SAMPLE": str(log_sample),
        "AUTOTUNE_AUTH": "1" if auth else "0",
    }
    for k, v in env.items():
        if v is not None:
            os.environ[k] = v
    from serving.launch import uvicorn_options

    uvicorn.run(
        "serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        **uvicorn_options(),
    )


@click.group()
def cli() -> None:
    """AutoTune model registry and server (standalone entry point)."""


cli.add_command(models)
cli.add_command(serve_models)


def main() -> None:
    cli(prog_name="python -m serving.cli")


if __name__ == "__main__":
    sys.exit(main())
