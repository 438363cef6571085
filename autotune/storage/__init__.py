"""Storage of the tuning core: SQLAlchemy models, engines and the Alembic migration chain.

- ``schema``: the core's tables (studies, trials, intermediate_values, queue) as models.
- ``engine``: ``Database`` (SQLite with WAL and serialized writes, or PostgreSQL through
  psycopg 3) and its retried transactions; ``normalize_url`` for ``AUTOTUNE_DB`` and friends.
- ``migrate``: ``upgrade`` applies ``migrations/versions`` under a database-wide lock; the
  service calls it on start. Every package adds its tables as the next revision of this one
  chain (``0002_registry`` follows ``0001``); see ``migrations/env.py`` for the commands.
"""

from autotune.storage.engine import DEFAULT_URL, Database, default_url, normalize_url
from autotune.storage.migrate import current_revision, head_revision, upgrade
from autotune.storage.schema import (
    Base,
    IntermediateValueRow,
    QueueRow,
    StudyRow,
    TrialRow,
)

__all__ = [
    "DEFAULT_URL",
    "Base",
    "Database",
    "IntermediateValueRow",
    "QueueRow",
    "StudyRow",
    "TrialRow",
    "current_revision",
    "default_url",
    "head_revision",
    "normalize_url",
    "upgrade",
]
