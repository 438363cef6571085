"""Storage of the tuning core: SQLAlchemy models, engines and the Alembic migration chain."""

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
