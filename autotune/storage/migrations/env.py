"""Alembic environment of AutoTune: one migration chain for every package's tables.

The service runs migrations programmatically (``autotune.storage.migrate.upgrade``), passing its
own connection in ``config.attributes["connection"]`` inside a transaction that already holds the
migration lock. From the command line, name the database with ``-x url=...`` (else
``AUTOTUNE_DB``), e.g.::

    alembic -c autotune/storage/migrations/alembic.ini -x url=sqlite:///autotune.db upgrade head
    alembic -c autotune/storage/migrations/alembic.ini revision --autogenerate -m "registry"

A package's tables either subclass ``autotune.storage.schema.Base`` or live in its own
``MetaData``; list that in ``autotune.storage.migrate.PACKAGE_METADATA`` so that autogenerate
(command line only) sees them; ``tests/autotune/test_storage.py`` checks that the list and the
migrations agree.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from autotune.storage.migrate import all_metadata
from autotune.storage.schema import Base

config = context.config


def _target_metadata() -> list[MetaData]:
    if config.attributes.get("connection") is not None:
        return [Base.metadata]  # applying migrations needs no models
    return all_metadata()


target_metadata = _target_metadata()


def _url() -> str:
    from autotune.storage.engine import normalize_url

    url = context.get_x_argument(as_dictionary=True).get("url")
    return normalize_url(url).render_as_string(hide_password=False)


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from autotune.storage.engine import Database
    from autotune.storage.migrate import upgrade_connection_locked

    db = Database(_url())
    try:
        with upgrade_connection_locked(db) as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        db.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
