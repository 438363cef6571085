"""Errors of the feature store, registered so that they travel over HTTP as the same class.

Retry behaviour per class, as in the tuning core: none of these is retryable except
:class:`OnlineStoreUnavailableError` (the Redis online store could not be reached).
"""

from __future__ import annotations

from autotune.errors import (
    NotFoundError,
    UnavailableError,
    ValidationError,
    register_error,
)

__all__ = [
    "FeatureGroupNotFoundError",
    "TrainingSetNotFoundError",
    "FeatureSchemaError",
    "IngestionRejectedError",
    "OnlineStoreUnavailableError",
]


@register_error
class FeatureGroupNotFoundError(NotFoundError):
    """No feature group (or version of it) with that name. Not retryable."""

    code = "feature_group_not_found"


@register_error
class TrainingSetNotFoundError(NotFoundError):
    """No training set with that name (or version). Not retryable."""

    code = "training_set_not_found"


@register_error
class FeatureSchemaError(ValidationError):
    """A batch does not fit the group's schema as a whole (missing or unknown columns, an
    unreadable file) or a feature reference is malformed; nothing was stored. Not retryable."""

    code = "feature_schema"


@register_error
class IngestionRejectedError(ValidationError):
    """``on_invalid="fail"`` and some rows were invalid: nothing was stored.

    ``details["rejected"]`` lists ``{"row", "reasons"}`` for the first rejected rows and
    ``details["n_rejected"]`` counts them all. Not retryable.
    """

    code = "ingestion_rejected"


@register_error
class OnlineStoreUnavailableError(UnavailableError):
    """The Redis online store did not answer. Retryable; the offline store is unaffected and
    re-ingesting the same rows is idempotent."""

    code = "online_store_unavailable"
