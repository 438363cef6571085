"""The API's one settings class, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from autotune.api.limits import LimitSettings

__all__ = ["Settings", "DB_ENV"]

DB_ENV = "AUTOTUNE_DB"
"""Environment variable naming the SQLAlchemy URL; ``autotune serve --db`` sets it for workers."""


@dataclass(frozen=True)
class Settings:
    """Where the API keeps its state and what one request may ask (``db_url=None`` lets the
    service pick its default; ``limits``: see :mod:`autotune.api.limits`)."""

    db_url: str | None = None
    limits: LimitSettings = field(default_factory=LimitSettings)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(db_url=os.environ.get(DB_ENV) or None, limits=LimitSettings.from_env())
