"""Errors of the registry and the model server.

Each class is registered with :func:`autotune.errors.register_error`, so an error raised by the
server comes back from the HTTP client as the same class. Whether a retry may help is said per
class (``retryable``), as in the tuning core.
"""

from __future__ import annotations

from typing import Any

from autotune.errors import (
    AutotuneError,
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    register_error,
)

__all__ = [
    "ModelNotFoundError",
    "InvalidInputError",
    "UnsafeArtifactError",
    "ArtifactIntegrityError",
    "ModelLoadError",
    "OverloadedError",
    "AliasConflictError",
]


@register_error
class ModelNotFoundError(NotFoundError):
    """No such model, version or alias. Not retryable."""

    code = "model_not_found"


@register_error
class InvalidInputError(ValidationError):
    """Prediction rows do not match the model's input signature. Not retryable.

    ``details`` has ``missing``, ``extra`` and ``wrong_type`` (each naming the features).
    """

    code = "invalid_input"


@register_error
class UnsafeArtifactError(ValidationError):
    """The artifact is in a format that could run code when loaded (pickle). Not retryable."""

    code = "unsafe_artifact"


@register_error
class ArtifactIntegrityError(AutotuneError):
    """A stored artifact is missing or its bytes no longer match its sha256. Not retryable."""

    code = "artifact_corrupt"
    status = 500


@register_error
class ModelLoadError(AutotuneError):
    """The artifact could not be loaded or failed its check on the input example."""

    code = "model_load_failed"
    status = 500


@register_error
class OverloadedError(UnavailableError):
    """The server's prediction queue is full. Retryable after a short wait."""

    code = "overloaded"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)


@register_error
class AliasConflictError(ConflictError):
    """The alias moved since the caller read it (``expected_version`` did not match)."""

    code = "alias_conflict"
