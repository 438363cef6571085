"""``features``: create, list, show, ingest and look up feature groups from the command line.

Attach to the ``autotune`` CLI with ``cli.add_command(features)``; standalone as
``python -m serving.features.cli``. ``--db`` (or ``AUTOTUNE_DB``) works in-process; ``--server``
(or ``AUTOTUNE_SERVER``) goes through the REST API. Errors print one line and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from autotune.errors import AutotuneError

__all__ = ["features", "main"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except AutotuneError as e:
            raise _Failure(f"{e.code}: {str(e).splitlines()[0] if str(e) else ''}") from None


class _Failure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _with_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--db", envvar="AUTOTUNE_DB", help="database URL [env AUTOTUNE_DB]")
    @click.option("--server", envvar="AUTOTUNE_SERVER", help="http://... [env AUTOTUNE_SERVER]")
    @wraps(fn)
    def wrapper(db: str | None, server: str | None, **kw: Any) -> Any:
        from serving.features.client import FeatureStore

        store = FeatureStore(server) if server and not db else FeatureStore(db=db)
        try:
            return fn(store=store, **kw)
        finally:
            store.close()

    return wrapper


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _load(path: Path) -> Any:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def features() -> None:
    """Feature groups: definitions, ingestion and online lookups."""


@features.command("create")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_with_store
def create(store: Any, spec_file: Path) -> None:
    """Create or update a feature group from a YAML or JSON definition."""
    r = store.apply(_load(spec_file))
    click.echo(f"{r.action}: {r.group.ref}" + (f" ({'; '.join(r.reasons)})" if r.reasons else ""))


@features.command("list")
@click.option("--all-versions", is_flag=True, help="every version, not only the latest")
@_with_store
def list_(store: Any, all_versions: bool) -> None:
    """List feature groups."""
    groups = store.list_groups(all_versions=all_versions)
    if not groups:
        click.echo("no feature groups")
        return
    click.echo(
        f"{'GROUP':<32} {'VERSION':>7} {'ENTITIES':<24} {'FEATURES':>8} {'TTL_S':>10}  OWNER"
    )
    for g in groups:
        click.echo(
            f"{g.name:<32} {g.version:>7} {','.join(g.entity_names):<24} "
            f"{len(g.features):>8} {g.ttl_s if g.ttl_s is not None else '-':>10}  {g.owner}"
        )


@features.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@_with_store
def show(store: Any, name: str, version: int | None) -> None:
    """Show a feature group's definition as JSON."""
    _echo(store.get_group(name, version).model_dump(mode="json"))


@features.command("ingest")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", type=int, default=None)
@click.option("--fail-on-invalid", is_flag=True, help="store nothing if any row is invalid")
@_with_store
def ingest(store: Any, name: str, path: Path, version: int | None, fail_on_invalid: bool) -> None:
    """Ingest a CSV, Parquet or JSON (list of rows) file."""
    import pandas as pd

    if path.suffix == ".parquet":
        data: Any = pd.read_parquet(path)
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
    else:
        data = pd.read_csv(path)
    r = store.ingest(
        name, data, version=version, on_invalid="fail" if fail_on_invalid else "reject"
    )
    click.echo(
        f"{r.group}@{r.version}: {r.accepted} accepted, {r.rejected} rejected of {r.received}"
    )
    for rej in r.rejections[:20]:
        click.echo(f"  row {rej['row']}: {'; '.join(rej['reasons'])}", err=True)
    if r.rejected:
        sys.exit(1)


@features.command("lookup")
@click.argument("name")
@click.option("-e", "--entity", "entities", multiple=True, required=True,
              help="key=value[,key=value] for one entity; repeat for more")  # fmt: skip
@click.option("-f", "--feature", "feature_names", multiple=True, help="features (default all)")
@click.option("--version", type=int, default=None)
@_with_store
def lookup(
    store: Any, name: str, entities: tuple[str, ...], feature_names: tuple[str, ...],
    version: int | None,
) -> None:  # fmt: skip
    """Read entities' latest values from the online store."""
    parsed = []
    for e in entities:
        ent = {}
        for part in e.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise click.UsageError(f"--entity {e!r}: write key=value", ctx=None)
            ent[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else v
        parsed.append(ent)
    rows = store.get_online(name, parsed, features=list(feature_names) or None, version=version)
    _echo([r.model_dump(mode="json") for r in rows])


def main() -> None:
    features.main(prog_name="features")


if __name__ == "__main__":
    main()
