"""AutoTune: optimization as a service.

The names here are the public Python API; importing ``autotune`` stays light (no torch,
no server) so that the client starts fast.
"""

from autotune.errors import (
    AlreadyExistsError,
    AutotuneError,
    ConflictError,
    NotFoundError,
    StudyNotActiveError,
    TrialFinishedError,
    UnavailableError,
    ValidationError,
)
from autotune.models import Direction, Study, StudySpec, StudyState, Trial, TrialState
from autotune.space import Categorical, Float, Int, SearchSpace

__all__ = [
    "AlreadyExistsError",
    "AutotuneError",
    "Categorical",
    "Client",
    "ConflictError",
    "Direction",
    "Float",
    "Int",
    "NotFoundError",
    "SearchSpace",
    "Study",
    "StudyNotActiveError",
    "StudySpec",
    "StudyState",
    "Trial",
    "TrialFinishedError",
    "TrialState",
    "UnavailableError",
    "ValidationError",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "Client":
        from autotune.client import Client

        return Client
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
