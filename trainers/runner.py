"""The Dask runner: a study spec in, every Dask worker kept busy, trained and tuned models out.

::

    result = run_study("studies/xgb_breast_cancer.yaml", client=autotune.Client())

The loop (one thread, in the caller's process):

1. ship the tuning data (train and validation splits, never the test split) to every worker
   once, with ``client.scatter(..., broadcast=True)``;
2. ask the service for as many trials as there are free worker threads (running trials count as
   pending there, so the designer does not propose them again) and submit one task per trial;
3. take results in completion order (``distributed.as_completed``), ``observe`` each (or
   ``fail`` it with its error), and refill the freed slot at once.

On the worker, a trial opens its own connection to the service (``autotune.Client(url)`` for a
server, ``autotune.Client(db=url)`` for an embedded database file, which is safe across
processes), reports intermediate values through it, sends heartbeats from a small thread, and
writes its model under ``artifacts_dir/<study>/<trial>/``; the path and checksum go into the
trial's metadata.

Faults. A worker process that dies mid-trial: the scheduler runs the task on another worker; each
start is counted in ``artifacts_dir/<study>/<trial>/`` (so a task that was only queued on the
dying worker is not blamed), and a trial whose workers died ``max_attempts`` times is failed with
that reason; the budget still completes because a failed trial counts against it. If every worker
holding the scattered data died, the data is shipped again and the trials that needed it rerun.
A trainer that raises: the trial is failed with
``"<ExceptionType>: <message>"``. The service unreachable (a restart): the runner retries its
calls for ``reconnect_timeout_s`` and the workers keep training. Running the same spec again
resumes: the study is loaded, trials left running by an interrupted run are run again under
their own numbers, and only the remaining budget is spent. (So two runners of one study at the
same time would run each other's trials twice: run one, with as many workers as you like.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from autotune.errors import (
    StudyNotActiveError,
    TrialFinishedError,
    UnavailableError,
    ValidationError,
)
from autotune.models import Study, Trial, TrialState
from trainers._base import TrainData, Trainer
from trainers._worker import (
    FAILURE_REASON_CHARS,
    Heartbeat,
    TrialOutcome,
    TrialTask,
    run_trial,
    warm_up,
)
from trainers.spec import RunSpec, load_spec

__all__ = ["run_study", "RunResult", "TrialOutcome", "service_address"]

logger = logging.getLogger("trainers.runner")

T = TypeVar("T")

DEFAULT_ARTIFACTS_DIR = "autotune-artifacts"
# A heartbeat every grace/3 survives two lost beats; never more often than once a second.
_HEARTBEAT_FRACTION = 1 / 3
_MIN_HEARTBEAT_S = 1.0
_DASK_ALLOWED_FAILURES = 10
# Trials suggested ahead of need: a freed worker starts the next trial without waiting for the
# designer; the suggestion is made while the workers are busy.
PREFETCH = 1
_SLOTS_REFRESH_S = 1.0
_MAX_RESUBMITS = 5  # reruns of one trial because its input data was lost (not its fault)
_WORKER_WAIT_S = 300.0  # how long to wait for a first worker (a cluster starting up)
_FINISHED = (TrialState.COMPLETED, TrialState.FAILED, TrialState.PRUNED)


@dataclass
class RunResult:
    """The outcome of one ``run_study`` call.

    Attributes:
        study: the study's name.
        completed, failed, pruned: counts over the whole study (all runs), at the end.
        ran: outcomes of the trials this call ran, in completion order.
        best: the best trial so far (None when nothing completed or several objectives).
        elapsed_s: wall time of this call.
        setup_s: of which before the first trial was submitted (service, data, cluster).
        dashboard: the Dask dashboard address.
    """

    study: str
    completed: int
    failed: int
    pruned: int
    ran: list[TrialOutcome]
    best: Trial | None
    elapsed_s: float
    dashboard: str | None = None
    setup_s: float = 0.0

    @property
    def n_trials(self) -> int:
        return self.completed + self.failed + self.pruned


# ------------------------------------------------------------------------------------------------
# The runner side


def service_address(client: Any) -> str:
    """The address a worker process uses to reach the same service as ``client``.

    An HTTP client's base URL, or the embedded service's database URL (password included, a
    relative SQLite path made absolute). An in-memory SQLite database cannot be shared.
    """
    transport = client.transport
    url = getattr(transport, "url", None)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    service = getattr(transport, "service", None)
    if service is None:
        raise ValidationError(f"cannot tell which service {client!r} talks to", field="client")
    from sqlalchemy.engine import make_url

    db = getattr(service, "db", None)
    raw = getattr(db, "url", None) or service.url
    sa_url = make_url(raw) if isinstance(raw, str) else raw
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            raise ValidationError(
                "an in-memory SQLite database cannot be shared with Dask workers; use a file "
                "(Client(db='sqlite:///autotune.db')) or a server URL",
                field="client",
            )
        sa_url = sa_url.set(database=str(Path(database).expanduser().resolve()))
    return sa_url.render_as_string(hide_password=False)


def _with_retry(call: Callable[[], T], *, what: str, timeout_s: float) -> T:
    """Retry a service call while the service is unreachable, for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return call()
        except UnavailableError as e:
            if time.monotonic() >= deadline:
                raise
            logger.warning("%s: service unavailable (%s); retrying in %.1f s", what, e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class _Progress:
    def __init__(self, name: str, total: int, metric: str, maximize: bool, enabled: bool) -> None:
        self.name, self.total, self.metric, self.maximize = name, total, metric, maximize
        self.enabled = enabled
        self.start = time.perf_counter()
        self.done = self.failed = self.pruned = 0
        self.best: tuple[float, int] | None = None
        self.tty = enabled and sys.stderr.isatty()

    def update(
        self, outcome: TrialOutcome, values: Mapping[str, float] | None, state: TrialState
    ) -> None:
        self.done += 1
        if state == TrialState.FAILED:
            self.failed += 1
        elif state == TrialState.PRUNED:
            self.pruned += 1
        elif values is not None and self.metric in values:
            v = values[self.metric]
            if self.best is None or (v > self.best[0] if self.maximize else v < self.best[0]):
                self.best = (v, outcome.number)
        if not self.enabled:
            return
        width = 20
        filled = int(width * min(self.done, self.total) / max(self.total, 1))
        best = f"{self.metric} {self.best[0]:.5g} (#{self.best[1]})" if self.best else "-"
        line = (
            f"[{self.name}] [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"trials ({self.pruned} pruned, {self.failed} failed) | best {best} | "
            f"{time.perf_counter() - self.start:.1f} s"
        )
        if self.tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def _check_same_study(spec: RunSpec, info: Study) -> None:
    """Resume only the study this spec made: a same-named study with another space or other
    objectives would mix incomparable trials."""
    from autotune.space import SearchSpace

    for key, stored, wanted in (
        ("space", SearchSpace(info.space), SearchSpace(spec.space)),
        ("objectives", dict(info.objectives), dict(spec.objectives)),
    ):
        if stored != wanted:
            raise ValidationError(
                f"{spec.source}: name: a study named {spec.name!r} already exists with a "
                f"different {key}; rename the study in the spec, or delete the old one "
                f"(autotune studies delete {spec.name})",
                field="name",
                details={"file": spec.source, "key": "name"},
            )


def _start_dask(*, workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    """(dask client, cluster we own or None)."""
    import dask
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    if scheduler is not None:
        return DaskClient(scheduler), None
    n = workers or os.cpu_count() or 1
    # The scheduler runs in this process, so the config reaches it. Dask blames every task
    # assigned to a dying worker, even one only queued there; the runner bounds real attempts
    # itself (max_attempts), so Dask's own bound is only a backstop.
    with dask.config.set({"distributed.scheduler.allowed-failures": _DASK_ALLOWED_FAILURES}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
    return DaskClient(cluster), cluster


def run_study(
    spec: RunSpec | str | os.PathLike[str],
    *,
    client: Any = None,
    n_trials: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    artifacts_dir: str | os.PathLike[str] = DEFAULT_ARTIFACTS_DIR,
    max_attempts: int = 3,
    reconnect_timeout_s: float = 120.0,
    dask_client: Any = None,
) -> RunResult:
    """Run a study spec on a Dask cluster until its budget is spent.

    Args:
        spec: a validated ``RunSpec`` or the path of a YAML spec.
        client: an ``autotune.Client``, a server URL (``http://...``), a database URL, or None
            for the embedded default (``AUTOTUNE_DB`` or ``sqlite:///autotune.db``).
        n_trials: the study's total budget; None -> the spec's ``max_trials``. A study created
            before keeps its stored ``max_trials``, which also caps this.
        workers: worker processes of the embedded LocalCluster; None -> the spec's ``workers``,
            else one per core. Ignored with ``scheduler`` or ``dask_client``.
        scheduler: ``tcp://host:8786`` of an existing Dask cluster (``artifacts_dir`` must then be
            a path every worker can write to).
        progress: print a progress line (trials done, best so far, elapsed) and the dashboard.
        artifacts_dir: models go to ``<artifacts_dir>/<study>/<trial>/<file>``.
        max_attempts: how many times a trial may start on a worker that then dies before the
            trial is failed (counted through ``artifacts_dir``, which must be shared).
        reconnect_timeout_s: how long to keep retrying while the service is unreachable.
        dask_client: an existing ``distributed.Client`` to use (not closed here).

    Returns:
        A ``RunResult``: counts over the study, this call's outcomes, the best trial.

    Raises:
        ValidationError: a bad spec (naming its file and key) or service settings.
    """
    import autotune

    start = time.perf_counter()
    if not isinstance(spec, RunSpec):
        spec = load_spec(spec)
    own_client = not hasattr(client, "create_study")
    if own_client:
        client = autotune.Client(client) if client is not None else autotune.Client()
    try:
        address = service_address(client)
        budget = n_trials or spec.max_trials
        splits = spec.load_splits()  # loads and checks the data before any cluster starts
        trainer = spec.make_trainer()
        try:
            study = _with_retry(
                lambda: client.create_study(
                    **spec.study_kwargs(max_trials=budget), load_if_exists=True
                ),
                what="create_study",
                timeout_s=reconnect_timeout_s,
            )
        except ValidationError as e:  # the service refused the spec: name the file
            raise ValidationError(f"{spec.source}: {e.message}", details=e.details) from None
        info = study.info
        _check_same_study(spec, info)
        if info.max_trials is not None and info.max_trials < budget:
            logger.warning(
                "study %r was created with max_trials=%d; running up to that, not %d",
                spec.name,
                info.max_trials,
                budget,
            )
            budget = info.max_trials
        grace = info.heartbeat_grace_s
        heartbeat_s = max(_MIN_HEARTBEAT_S, grace * _HEARTBEAT_FRACTION) if grace else None

        n_finished = sum(_count(study, state, reconnect_timeout_s) for state in _FINISHED)
        orphans = _with_retry(
            lambda: study.trials(TrialState.RUNNING), what="trials", timeout_s=reconnect_timeout_s
        )
        if n_finished >= budget and not orphans:
            if progress:
                print(
                    f"[{spec.name}] nothing to do: {n_finished} of {budget} trials finished",
                    file=sys.stderr,
                    flush=True,
                )
            return _result(spec, study, [], start, None, reconnect_timeout_s)
        if dask_client is not None:
            dask, cluster = dask_client, None
        else:
            dask, cluster = _start_dask(
                workers=workers or spec.workers,
                scheduler=scheduler,
            )
        try:
            return _loop(
                spec=spec,
                study=study,
                dask=dask,
                trainer=trainer,
                data=splits.tuning_data(),
                address=address,
                budget=budget,
                artifacts_dir=str(Path(artifacts_dir).expanduser().resolve()),
                heartbeat_s=heartbeat_s,
                progress=progress,
                reconnect_timeout_s=reconnect_timeout_s,
                start=start,
                n_finished=n_finished,
                orphans=orphans,
                info=info,
                max_attempts=max_attempts,
            )
        finally:
            if dask_client is None:
                dask.close()
                if cluster is not None:
                    cluster.close()
    finally:
        if own_client:
            client.close()


def _loop(
    *,
    spec: RunSpec,
    study: Any,
    dask: Any,
    trainer: Trainer,
    data: TrainData,
    address: str,
    budget: int,
    artifacts_dir: str,
    heartbeat_s: float | None,
    progress: bool,
    reconnect_timeout_s: float,
    start: float,
    n_finished: int,
    orphans: list[Trial],
    info: Study,
    max_attempts: int,
) -> RunResult:
    from distributed import as_completed

    def call(fn: Callable[[], T], what: str) -> T:
        return _with_retry(fn, what=what, timeout_s=reconnect_timeout_s)

    metric = spec.primary_metric
    reported = [*spec.objectives, *spec.constraints]
    dashboard = getattr(dask, "dashboard_link", None)
    if progress:
        print(f"[{spec.name}] Dask dashboard: {dashboard}", file=sys.stderr, flush=True)
        if n_finished or orphans:
            print(
                f"[{spec.name}] resuming: {n_finished} of {budget} trials finished"
                + (f", re-running {len(orphans)} left running" if orphans else ""),
                file=sys.stderr,
                flush=True,
            )
    bar = _Progress(
        spec.name, budget, metric, spec.objectives[metric].value == "maximize", progress
    )
    bar.done = n_finished

    fixed = spec.trainer.params
    run_id = uuid.uuid4().hex[:12]
    data_refs: list[Any] = []  # every copy shipped, kept alive while tasks may use it

    def ship_data() -> None:
        """The one copy of the data on every worker; each task gets a reference to it."""
        dask.wait_for_workers(1, timeout=_WORKER_WAIT_S)
        data_refs.append(dask.scatter(data, broadcast=True, hash=False))

    def submit(trial: Trial) -> Any:
        task = TrialTask(
            study=spec.name,
            study_info=info,
            number=trial.number,
            params={**fixed, **trial.params},
            trainer=trainer,
            metric=metric,
            seed=spec.seed + trial.number,
            cv_folds=spec.cv_folds,
            service=address,
            artifacts_dir=artifacts_dir,
            heartbeat_s=heartbeat_s,
            run_id=run_id,
            max_attempts=max_attempts,
            sync_reports=spec.sync_reports,
        )
        key = f"trial-{spec.name}-{trial.number}-{uuid.uuid4().hex[:8]}"
        fut = dask.submit(run_trial, task, data_refs[-1], key=key, pure=False)
        running[fut] = (trial, len(data_refs))
        done.add(fut)
        return fut

    running: dict[Any, tuple[Trial, int]] = {}  # future -> (trial, copy of the data it uses)
    done = as_completed()
    resubmitted: dict[int, int] = {}
    ran: list[TrialOutcome] = []
    exhausted = False
    with contextlib.suppress(Exception):  # only an optimisation: trials connect lazily anyway
        dask.run(warm_up, address, trainer)
    ship_data()
    for t in orphans:  # an interrupted run's trials: run them again under their numbers
        submit(t)

    ready: list[Trial] = []  # suggested ahead, handed to the next free worker at once
    slots_seen = [0, -math.inf]  # (worker threads, when counted)

    def slots() -> int:
        now = time.monotonic()
        if now - slots_seen[1] > _SLOTS_REFRESH_S:  # one scheduler round trip, not per trial
            slots_seen[:] = [sum(dask.nthreads().values()) or 1, now]
        return int(slots_seen[0])

    def fill() -> None:
        """Give every free worker thread a trial, then suggest ``PREFETCH`` ahead.

        A trial suggested ahead is running for the service (so the designer counts it as
        pending), and the next free worker starts it without waiting for a suggest.
        """
        nonlocal exhausted
        free = slots() - len(running)
        while free > 0 and ready:
            submit(ready.pop(0))
            free -= 1
        if exhausted:
            return
        left = budget - n_finished - len(running) - len(ready)
        want = min(max(free, 0) + PREFETCH - len(ready), left)
        if want <= 0:
            return
        try:
            trials = call(lambda: study.suggest(want), "suggest")
        except StudyNotActiveError:  # paused or completed by someone else: finish what runs
            trials = []
        # The service's budget counts running trials, so an empty answer is final.
        exhausted = not trials
        for t in trials:
            if free > 0:
                submit(t)
                free -= 1
            else:
                ready.append(t)

    def drain() -> None:
        nonlocal n_finished
        fill()
        while running or ready:
            if not running:
                fill()
                continue
            fut = next(done)
            trial, copy = running.pop(fut)
            n_finished += 1
            # The freed worker gets its next trial before anything else: fetching this result
            # and recording it happen while that trial already runs.
            fill()
            outcome, data_lost = _outcome_of(fut, trial.number)
            if data_lost and resubmitted.get(trial.number, 0) < _MAX_RESUBMITS:
                # Every worker holding the scattered data died (their trials were retried or
                # failed already): ship it again and run this trial again.
                n_finished -= 1
                resubmitted[trial.number] = resubmitted.get(trial.number, 0) + 1
                if copy == len(data_refs):
                    logger.warning("the training data was lost with its workers; shipping again")
                    ship_data()
                submit(trial)
                continue
            values, state = _record(study, outcome, reported, call)
            ran.append(outcome)
            bar.update(outcome, values, state)

    setup_s = time.perf_counter() - start
    # Trials suggested ahead wait in ``ready``, not on a worker: keep them alive meanwhile.
    with Heartbeat(study, lambda: [t.number for t in list(ready)], heartbeat_s):
        drain()
    bar.close()

    result = _result(spec, study, ran, start, dashboard, reconnect_timeout_s)
    result.setup_s = setup_s
    best = result.best
    if progress:
        best_text = f"best {metric} {best.values[metric]:.6g} (trial {best.number})" if best else ""
        print(
            f"[{spec.name}] done: {result.completed} completed, {result.failed} failed, "
            f"{result.pruned} pruned in {result.elapsed_s:.1f} s; {best_text}",
            file=sys.stderr,
            flush=True,
        )
    return result


def _count(study: Any, state: TrialState, timeout_s: float) -> int:
    return _with_retry(lambda: study.count_trials(state), what="count", timeout_s=timeout_s)


def _result(
    spec: RunSpec,
    study: Any,
    ran: list[TrialOutcome],
    start: float,
    dashboard: str | None,
    reconnect_timeout_s: float,
) -> RunResult:
    counts = {state: _count(study, state, reconnect_timeout_s) for state in _FINISHED}
    best: Trial | None = None
    if len(spec.objectives) == 1:
        found = _with_retry(lambda: study.best_trials, what="best", timeout_s=reconnect_timeout_s)
        best = found[0] if found else None
    return RunResult(
        study=spec.name,
        completed=counts[TrialState.COMPLETED],
        failed=counts[TrialState.FAILED],
        pruned=counts[TrialState.PRUNED],
        ran=ran,
        best=best,
        elapsed_s=time.perf_counter() - start,
        dashboard=dashboard,
    )


def _outcome_of(fut: Any, number: int) -> tuple[TrialOutcome, bool]:
    """(the worker's outcome or a failed one when the task could not finish, data lost?)."""
    from concurrent.futures import CancelledError

    try:
        return fut.result(), False
    except Exception as e:  # KilledWorker (its workers kept dying), a cancelled task, ...
        error = f"{type(e).__name__}: {e}"[:FAILURE_REASON_CHARS]
        # A task whose input (the scattered data) was lost is cancelled, not failed.
        return TrialOutcome(number=number, error=error), isinstance(e, CancelledError)
    finally:
        fut.release()


def _record(
    study: Any,
    outcome: TrialOutcome,
    reported: list[str],
    call: Callable[[Callable[[], Any], str], Any],
) -> tuple[dict[str, float] | None, TrialState]:
    """Observe or fail the trial; returns (the values observed or None, the trial's state)."""
    number = outcome.number
    if outcome.last_report is not None:  # the trial's last value, not yet stored
        step, value = outcome.last_report
        with contextlib.suppress(TrialFinishedError):
            call(lambda: study.report(number, step, value), f"report trial {number}")
    if outcome.error is None:
        values = {k: outcome.metrics[k] for k in reported if k in outcome.metrics}
        bad = [k for k in reported if not math.isfinite(values.get(k, math.nan))]
        if bad:
            outcome.error = f"metric(s) {bad} missing or not finite: {outcome.metrics}"
    if outcome.error is not None:
        # TrialFinishedError: finished meanwhile (a retried request that had been applied).
        with contextlib.suppress(TrialFinishedError):
            call(lambda: study.fail(number, outcome.error or ""), f"fail trial {number}")
        logger.warning("trial %d failed: %s", number, outcome.error)
        return None, TrialState.FAILED
    metadata = {
        "metrics": {k: v for k, v in outcome.metrics.items() if math.isfinite(v)},
        "steps": outcome.steps,
        "stopped": outcome.stopped,
        "duration_s": round(outcome.duration_s, 4),
        "worker": outcome.worker,
    }
    if outcome.artifact is not None:
        metadata["artifact"] = outcome.artifact
    if outcome.info:
        metadata["trainer_info"] = outcome.info
    try:
        call(
            lambda: study.observe(number, values, metadata=metadata),
            f"observe trial {number}",
        )
    except TrialFinishedError:  # pruned by its stopper, or an acknowledgement lost in a restart
        state = call(lambda: study.get_trial(number), f"get trial {number}").state
        if state != TrialState.COMPLETED:
            return None, state
    return values, TrialState.COMPLETED
