"""AutoTune's serving tier: the model registry, the artifact store and the model server.

Importing ``serving`` is light: no web framework, no torch. The server lives in
:mod:`serving.server` and :mod:`serving.app`; the CLI in :mod:`serving.cli`.
"""

from serving.artifacts import FORMATS, ArtifactStore
from serving.errors import (
    AliasConflictError,
    ArtifactIntegrityError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    UnsafeArtifactError,
)
from serving.registry import DEFAULT_ALIAS, ModelRegistry
from serving.schemas import (
    AliasEvent,
    Comparison,
    Feature,
    Lineage,
    ModelDetail,
    ModelSummary,
    ModelVersion,
    OutputSchema,
    PromotionResult,
    Signature,
)

__all__ = [
    "DEFAULT_ALIAS",
    "FORMATS",
    "AliasConflictError",
    "AliasEvent",
    "ArtifactIntegrityError",
    "ArtifactStore",
    "Comparison",
    "Feature",
    "InvalidInputError",
    "Lineage",
    "ModelDetail",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "OutputSchema",
    "OverloadedError",
    "PromotionResult",
    "Signature",
    "UnsafeArtifactError",
]
