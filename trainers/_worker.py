"""What runs on a Dask worker: one trial, its service connection, reports and heartbeats.

``run_trial`` is the task the runner submits. It opens (once per worker process) its own
connection to the service, reports intermediate values from a thread, sends heartbeats, writes
the model under ``artifacts_dir/<study>/<trial>/`` and returns a small ``TrialOutcome``; a
trainer's exception comes back as text, never as a traceback. See ``trainers.runner``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import NotFoundError, TrialFinishedError
from autotune.models import Study
from trainers._base import Reporter, TrainData, Trainer, TrainResult

__all__ = [
    "REPORT_INTERVAL_S",
    "Heartbeat",
    "ServiceReporter",
    "TrialOutcome",
    "TrialTask",
    "connect",
    "run_trial",
    "warm_up",
]

logger = logging.getLogger("trainers.runner")

# The reporter sends at most one intermediate value per interval (the newest); steps that take
# longer (epochs) are all sent. 50 ms: a stop decision is late by a few boosting rounds at most.
REPORT_INTERVAL_S = 0.05
FAILURE_REASON_CHARS = 2_000


@dataclass
class TrialOutcome:
    """What a worker returns for one trial (small: the model itself stays on disk)."""

    number: int
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    artifact: dict[str, Any] | None = None
    steps: int = 0
    stopped: bool = False
    duration_s: float = 0.0
    worker: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # time.time() on the worker, for utilization
    ended_at: float = 0.0
    last_report: tuple[int, float] | None = None  # (step, value) the runner still has to send


@dataclass(frozen=True)
class TrialTask:
    study: str
    study_info: Study  # the worker builds its study handle from this, without a round trip
    number: int
    params: dict[str, Any]
    trainer: Trainer
    metric: str
    seed: int
    cv_folds: int | None
    service: str
    artifacts_dir: str
    heartbeat_s: float | None
    run_id: str
    max_attempts: int
    sync_reports: bool = False

    @property
    def folder(self) -> Path:
        return Path(self.artifacts_dir) / self.study / str(self.number)


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def connect(address: str) -> Any:
    """One autotune client per worker process and service address (opening one is not free)."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(address)
        if client is None:
            import autotune

            if address.startswith(("http://", "https://")):
                client = autotune.Client(address)
            else:
                client = autotune.Client(db=address)
            _CLIENTS[address] = client
        return client


def warm_up(address: str, trainer: Trainer | None = None) -> None:
    """Open this worker's service connection and import the trainer's library before the first
    trial needs them."""
    connect(address)
    if trainer is not None:
        trainer.prepare()


class ServiceReporter:
    """Sends reports from a thread, so training never waits for the service.

    ``report`` hands the value to the sender thread and returns the latest ``should_stop`` the
    service gave. The thread sends at most one value per ``REPORT_INTERVAL_S``; values that come
    faster (boosting rounds of a millisecond) replace the one waiting, so the stored curve is
    thinned, training never waits, the service and the worker's cores are not flooded, and a
    stop arrives at most an interval and a round trip late. Slower steps (epochs) all go. The last value always arrives: if it is not stored when training ends,
    ``close`` returns it and the runner sends it before ``observe``. The stoppers read curves with gaps
    (``Curve.value_at_or_after``, ``best_up_to``). With ``sync`` (the spec's ``sync_reports``)
    every value is sent and answered before training goes on: exact curves and stops, at a
    round trip per step. An unreachable service (a restart) does not stop training: the value is
    logged and dropped, and the next one tries again.
    """

    def __init__(self, study: Any, number: int, *, sync: bool = False) -> None:
        self.study = study
        self.number = number
        self.sync = sync
        self.should_stop = False
        self.finished = False  # the service says the trial is over (pruned, failed, abandoned)
        self.sent = 0
        self._pending: tuple[int, float] | None = None
        self._last: tuple[int, float] | None = None  # the latest value reported
        self._confirmed: tuple[int, float] | None = None  # the latest value the service stored
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._send, name=f"report-{number}", daemon=True)
        self._thread.start()

    def report(self, step: int, value: float) -> bool:
        if not math.isfinite(value) or self.finished:
            return self.should_stop
        item = (int(step), float(value))
        if self.sync:  # every value, and the answer to it, before training goes on
            self._send_one(item)
            return self.should_stop
        with self._cond:
            self._pending = self._last = item
            self._cond.notify()
        return self.should_stop

    def _send(self) -> None:
        next_at = 0.0
        while True:
            with self._cond:
                # Wait for a value, and at least REPORT_INTERVAL_S since the last send (newer
                # values replace it meanwhile); on close, ``close`` hands the last one over.
                while not self._closing and (
                    self._pending is None or (wait := next_at - time.monotonic()) > 0
                ):
                    self._cond.wait(None if self._pending is None else wait)
                if self._closing:
                    return
                item, self._pending = self._pending, None
            if not self.finished:
                self._send_one(item)
            next_at = time.monotonic() + REPORT_INTERVAL_S

    def _send_one(self, item: tuple[int, float]) -> None:
        try:
            if self.study.report(self.number, *item):
                self.should_stop = True
            self.sent += 1
            with self._cond:
                self._confirmed = item
        except TrialFinishedError:
            self.finished = self.should_stop = True
        except Exception as e:  # a restarting service: keep training, try the next one
            logger.warning("report of trial %d step %d failed: %s", self.number, item[0], e)

    def close(self) -> tuple[int, float] | None:
        """Stop without waiting for the service; returns the last value if it is not yet stored.

        The caller hands that value to the runner, which sends it before ``observe``: the trial
        ends as soon as training does, and its last value still reaches the curve (a value sent
        twice overwrites itself). A send still in flight finishes in the background.
        """
        with self._cond:
            self._closing = True
            self._pending = None
            self._cond.notify()
            if self.finished or self._last is None or self._last == self._confirmed:
                return None
            return self._last


class Heartbeat:
    """Sends ``study.heartbeat(n)`` for each of ``numbers()`` every ``interval`` seconds."""

    def __init__(
        self, study: Any, numbers: Callable[[], list[int]], interval: float | None
    ) -> None:
        self.study, self.numbers, self.interval = study, numbers, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autotune-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            for number in self.numbers():
                try:
                    self.study.heartbeat(number)
                except (TrialFinishedError, NotFoundError):
                    pass  # finished meanwhile: nothing to keep alive
                except Exception as e:  # a restarting service: the next beat tries again
                    logger.warning("heartbeat of trial %d failed: %s", number, e)


def _fit(task: TrialTask, data: TrainData, reporter: Reporter) -> TrainResult:
    if task.cv_folds:
        from trainers.cv import cross_validate

        return cross_validate(
            task.trainer,
            task.params,
            data,
            folds=task.cv_folds,
            reporter=reporter,
            metric=task.metric,
            seed=task.seed,
        )
    return task.trainer.fit(
        task.params, data, reporter=reporter, metric=task.metric, seed=task.seed
    )


def _write_artifact(task: TrialTask, result: TrainResult) -> dict[str, Any] | None:
    art = result.artifact
    if art is None:
        return None
    folder = task.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / art.filename
    tmp = path.with_name(f".{art.filename}.{uuid.uuid4().hex}")
    tmp.write_bytes(art.data)
    os.replace(tmp, path)  # atomic: a retried attempt never leaves half a file
    return {
        "path": str(path),
        "format": art.format,
        "sha256": hashlib.sha256(art.data).hexdigest(),
        "bytes": len(art.data),
    }


def _start_attempt(task: TrialTask) -> int:
    """Record that ``task`` starts on a worker; returns which start this is (1, 2, ...)."""
    task.folder.mkdir(parents=True, exist_ok=True)
    path = task.folder / f".attempts-{task.run_id}"
    with open(path, "a") as f:  # one short append per start: atomic enough on local disks
        f.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def _end_attempts(task: TrialTask) -> None:
    """The trial ended on a live worker: its start count is no longer needed."""
    with contextlib.suppress(OSError):
        (task.folder / f".attempts-{task.run_id}").unlink()


def run_trial(task: TrialTask, data: TrainData) -> TrialOutcome:
    """Run one trial on a worker. Never raises for a trainer's error: it comes back as text."""
    start = time.perf_counter()
    started_at = time.time()
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    attempt = _start_attempt(task)
    if attempt > task.max_attempts:
        return TrialOutcome(
            number=task.number,
            error=f"WorkerDied: the worker running this trial died {attempt - 1} times",
            worker=worker,
        )
    from autotune.client import StudyClient

    study = StudyClient(connect(task.service).transport, task.study_info)
    reporter = ServiceReporter(study, task.number, sync=task.sync_reports)
    try:
        with Heartbeat(study, lambda: [task.number], task.heartbeat_s):
            try:
                result = _fit(task, data, reporter)
            finally:
                last_report = reporter.close()
            artifact = _write_artifact(task, result)
    except Exception as e:
        _end_attempts(task)
        return TrialOutcome(
            number=task.number,
            error=f"{type(e).__name__}: {e}"[:FAILURE_REASON_CHARS],
            duration_s=time.perf_counter() - start,
            worker=worker,
            started_at=started_at,
            ended_at=time.time(),
        )
    _end_attempts(task)
    return TrialOutcome(
        number=task.number,
        metrics=result.metrics,
        artifact=artifact,
        steps=result.steps,
        stopped=result.stopped or reporter.finished,
        duration_s=time.perf_counter() - start,
        worker=worker,
        info={**result.info, "reports_sent": reporter.sent},
        last_report=last_report,
        started_at=started_at,
        ended_at=time.time(),
    )
