"""Projects (tenants): every study, model and feature group belongs to one.

A request authenticated with an API key runs in the key's project; with authentication off
everything runs in :data:`DEFAULT_PROJECT`, exactly as before projects existed. The API passes
the project to :class:`autotune.service.StudyService` explicitly; the model registry and the
feature store, whose routes are shared with other apps, read it from :data:`current_project`,
a context variable the authentication middleware sets for the request (copied into the worker
threads that run sync handlers).

Model names travel through the model server's routes and caches *qualified*: ``name`` in the
default project, ``project~name`` in any other (``~`` is in neither a project nor a model name),
so two projects' models of the same name are two entries of the server's caches.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

from autotune.errors import ValidationError

__all__ = [
    "DEFAULT_PROJECT",
    "PROJECT_PATTERN",
    "QUALIFIER",
    "current_project",
    "check_project",
    "qualify",
    "split_qualified",
]

DEFAULT_PROJECT = "default"
PROJECT_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
QUALIFIER = "~"

current_project: ContextVar[str] = ContextVar("autotune_project", default=DEFAULT_PROJECT)


def check_project(project: str) -> str:
    """``project`` if it is a valid project name, else a ValidationError naming it."""
    if not isinstance(project, str) or not PROJECT_PATTERN.match(project):
        raise ValidationError(
            f"project name {project!r} is not allowed: use 1-64 letters, digits, '_', '.' or "
            "'-', not starting with '.' or '-'",
            field="project",
        )
    return project


def qualify(project: str, name: str) -> str:
    """The name the model server knows a model by: bare in the default project."""
    return name if project == DEFAULT_PROJECT else f"{project}{QUALIFIER}{name}"


def split_qualified(name: str) -> tuple[str, str]:
    """(project, bare name) of a possibly qualified model name (not validated)."""
    project, sep, bare = name.partition(QUALIFIER)
    return (project, bare) if sep else (DEFAULT_PROJECT, name)
