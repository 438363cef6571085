"""A trial being evaluated in ``study.trial()`` or ``study.optimize``, and its heartbeat."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any

from autotune.errors import ConflictError, NotFoundError, ValidationError
from autotune.models import Trial, TrialState

if TYPE_CHECKING:
    from autotune.client._client import StudyClient

__all__ = ["ActiveTrial", "Heartbeat", "TrialPruned", "MIN_HEARTBEAT_S"]

logger = logging.getLogger("autotune.client")

# A heartbeat every grace/3 survives two lost beats; never more often than once a second.
HEARTBEAT_FRACTION = 1 / 3
MIN_HEARTBEAT_S = 1.0

# The service keeps a failure reason's first 10,000 characters; no point sending more.
MAX_REASON_CHARS = 10_000

Values = Mapping[str, float] | float | list[float] | tuple[float, ...]


class TrialPruned(Exception):  # noqa: N818 (Optuna's name, which users know)
    """Raise inside ``study.trial()`` or an ``optimize`` objective to end the trial early.

    After ``t.report`` answered ``True`` the service has already pruned the trial; raising this
    (or simply returning) ends the block quietly. Raised without such an answer, it marks the
    trial failed with the reason "pruned by the objective", since only the study's stopper can
    prune.
    """


class Heartbeat:
    """Sends ``study.heartbeat(number)`` every ``interval`` seconds from a daemon thread.

    Stops by itself once the trial is finished or gone; other errors (a server restart) are
    logged and the next beat tries again.
    """

    def __init__(self, study: StudyClient, number: int, interval: float) -> None:
        self.study = study
        self.number = number
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"autotune-heartbeat-{study.name}-{number}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.study.heartbeat(self.number)
            except (ConflictError, NotFoundError):
                return  # finished, abandoned-and-finished, or deleted: nothing to keep alive
            except Exception as e:  # a restarting server: try again at the next beat
                logger.warning("heartbeat of trial %d failed: %s", self.number, e)


class ActiveTrial:
    """A trial handed out by ``study.trial()`` or passed to the function in ``optimize``.

    Read ``params`` (or ``t["lr"]``), ``report(step, value)`` intermediate values, and set the
    result with ``t.observe({"loss": x})`` or ``t.values = {"loss": x}``: it is sent when the
    block ends, so a block that raises afterwards still fails the trial. Once ``report`` answers
    ``True`` (``t.should_stop``), the study's stopper has ended the trial as pruned: stop
    training and leave the block (or raise :class:`TrialPruned`); nothing more is sent.
    """

    def __init__(self, study: StudyClient, trial: Trial) -> None:
        self._study = study
        self.trial = trial
        self.values: Values | None = None
        self.metadata: dict[str, Any] | None = None
        self.should_stop = False

    def __repr__(self) -> str:
        return f"ActiveTrial(number={self.number}, params={self.params!r}, state={self.state})"

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def params(self) -> dict[str, Any]:
        return self.trial.params

    @property
    def state(self) -> TrialState:
        return self.trial.state

    def __getitem__(self, name: str) -> Any:
        return self.trial.params[name]

    def observe(self, values: Values, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Set the trial's metrics; they are sent when the ``with`` block ends."""
        self.values = values
        if metadata is not None:
            self.metadata = dict(metadata)

    def report(self, step: int, value: float) -> bool:
        """Report an intermediate value now; returns (and keeps) ``should_stop``."""
        self.should_stop = self._study.report(self.number, step, value)
        return self.should_stop

    # -- used by StudyClient -----------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            self.trial = self._study.get_trial(self.number)
        except Exception as e:  # only the local copy goes stale
            logger.warning("could not refresh trial %d: %s", self.number, e)

    def _fail(self, reason: str) -> None:
        reason = reason[:MAX_REASON_CHARS]
        try:
            self.trial = self._study.fail(self.number, reason)
        except Exception as e:  # the caller re-raises the original error
            logger.warning("could not mark trial %d failed: %s", self.number, e)

    def _complete(self) -> None:
        if self.should_stop:
            self._refresh()  # pruned by the stopper when it answered; its values are set
            return
        if self.values is None:
            reason = (
                "the trial() block ended without values: call t.observe({...}) "
                "or set t.values inside it"
            )
            self._fail(reason)
            raise ValidationError(reason, field="values")
        try:
            self.trial = self._study.observe(self.number, self.values, metadata=self.metadata)
        except ValidationError as e:
            self._fail(f"invalid values {self.values!r}: {e}")
            raise


def is_finite_result(values: Any) -> bool:
    """False when an objective function returned NaN or infinity somewhere."""
    if isinstance(values, Real) and not isinstance(values, bool):
        return math.isfinite(float(values))
    if isinstance(values, Mapping):
        return all(is_finite_result(v) for v in values.values())
    if isinstance(values, (list, tuple)):
        return all(is_finite_result(v) for v in values)
    return True
