"""The designer interface: a pure function from a study's history to new configurations.

A designer sees the problem (space, objectives, constraints), the finished trials, the
configurations still running and a seed, and returns ``count`` new configurations. It touches no
database, no HTTP and no clock, so the same code runs in tests, benchmarks and the service
(Vizier's ``Designer``, Optuna's samplers). Determinism: given the same inputs and seed, a
designer returns the same configurations; the service passes the study's seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from autotune.errors import ValidationError
from autotune.models import Constraint, Direction, Study, Trial
from autotune.space import Params, SearchSpace

__all__ = ["Problem", "Designer", "register_designer", "make_designer", "designer_names"]


@dataclass(frozen=True)
class Problem:
    """What a designer optimizes: the space, the objectives and the outcome constraints."""

    space: SearchSpace
    objectives: Mapping[str, Direction] = field(
        default_factory=lambda: {"value": Direction.MINIMIZE}
    )
    constraints: Mapping[str, Constraint] = field(default_factory=dict)

    @classmethod
    def from_study(cls, study: Study) -> Problem:
        return cls(
            space=study.search_space(),
            objectives=dict(study.objectives),
            constraints=study.constraint_objects(),
        )


class Designer(ABC):
    """Proposes configurations. Subclasses set ``name`` and implement ``suggest``.

    ``completed`` holds finished trials (completed, failed, pruned; a designer decides what to
    learn from each); ``pending`` the configurations of running trials, which a good designer
    avoids duplicating. Instances may cache work between calls (a fitted model), but results
    must not depend on whether the cache was there.

    ``expensive`` designers (a model fit per call) are run by the service outside its write
    transaction, and their next suggestion may be computed ahead in the background.
    """

    name: ClassVar[str]
    expensive: ClassVar[bool] = False

    @abstractmethod
    def suggest(
        self,
        problem: Problem,
        *,
        completed: Sequence[Trial],
        pending: Sequence[Params],
        count: int,
        seed: int,
    ) -> list[Params]:
        """Return ``count`` valid configurations of ``problem.space``."""

    def describe(self) -> dict[str, Any]:
        """What this designer is, for the study's details (``auto`` says what it chose)."""
        return {"designer": self.name}


_REGISTRY: dict[str, Callable[..., Designer]] = {}


def register_designer(
    name: str,
) -> Callable[[Callable[..., Designer]], Callable[..., Designer]]:
    """Class decorator that makes a designer available by name, refusing duplicates."""

    def deco(factory: Callable[..., Designer]) -> Callable[..., Designer]:
        if name in _REGISTRY:
            raise ValueError(f"designer {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def designer_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_designer(name: str, **options: Any) -> Designer:
    """Build the designer registered under ``name``.

    Raises:
        ValidationError: on an unknown name, listing the known ones.
    """
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValidationError(
            f"unknown algorithm {name!r}; choose one of {sorted(_REGISTRY)}", field="algorithm"
        ) from None
    return factory(**options)


def _load_builtin() -> None:
    # Imported lazily: the GP designer pulls in torch, which the client must not pay for.
    import autotune.designers.bohb  # noqa: F401
    import autotune.designers.random  # noqa: F401
    import autotune.designers.sobol  # noqa: F401

    try:
        import autotune.designers.auto  # noqa: F401
    except ModuleNotFoundError as e:  # pragma: no cover - only before the GP engine exists
        if e.name != "autotune.designers.auto":
            raise
