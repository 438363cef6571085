"""A study's trials read once and shared by every figure and table request: the bridge between
the pure figure functions and the service (the only module of this package that knows it).

A dashboard opening a 10,000-trial study asks for nine figures and a table page at once;
reading the trials for each would cost nine full reads. ``SnapshotCache`` reads them once, keeps
the figures computed from them, and reads again only when the study changed: its trial count or
the count of trials in any state moved (finished trials never change), or, while trials are
running (their learning curves grow), when the snapshot is older than ``max_age_s``. A burst of
requests within ``fresh_s`` shares one check. Like every cache of the service it may be lost at
any time without changing an answer, beyond that bounded staleness.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autotune.models import Study, Trial, TrialState
from autotune.service import MAX_PAGE_LIMIT, StudyService

__all__ = ["Snapshot", "SnapshotCache", "snapshot_cache"]

# Studies whose trials a process keeps (about 10 MB for 10,000 trials).
_MAX_STUDIES = 8
# A study with running trials is read again after this long (the dashboard polls every few s).
_MAX_AGE_S = 5.0
# Requests this close together trust the last check instead of counting trials again.
_FRESH_S = 0.5
_COUNTED = (TrialState.COMPLETED, TrialState.FAILED, TrialState.PRUNED, TrialState.RUNNING)


@dataclass
class Snapshot:
    """A study and all its trials (by number) as read at ``loaded_at``."""

    study: Study
    trials: list[Trial]
    counts: dict[str, int]
    key: tuple[Any, ...]
    loaded_at: float
    checked_at: float
    # Derived data computed from this snapshot (figure JSON, table rows), by a caller's key.
    derived: dict[Any, Any] = field(default_factory=dict)

    # Changes when the study does: the dashboard's cue to redraw. Built from the study's counts
    # (and, while trials run, the wall-clock period of ``max_age_s`` they are read in), so every
    # API process behind a load balancer answers the same version for the same study.
    version: str = ""

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per snapshot and key (two racing callers may both compute)."""
        try:
            return self.derived[key]
        except KeyError:
            value = compute()
            self.derived[key] = value
            return value


class SnapshotCache:
    """Snapshots of the studies a process was last asked about. Thread-safe.

    Args:
        service: where the trials come from.
        max_studies: studies kept (least recently used dropped first).
        max_age_s: a study with running trials is read again after this long.
        fresh_s: requests this close together share one change check.
        clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        service: StudyService,
        *,
        max_studies: int = _MAX_STUDIES,
        max_age_s: float = _MAX_AGE_S,
        fresh_s: float = _FRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._max_studies = max_studies
        self._max_age_s = max_age_s
        self._fresh_s = fresh_s
        self._clock = clock
        self._snaps: OrderedDict[str, Snapshot] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Snapshot:
        """The study's snapshot, read again if the study changed.

        Raises:
            NotFoundError: no study of that name.
        """
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        # One reader per study: concurrent figure requests wait for one read instead of each
        # reading the trials.
        with lock:
            now = self._clock()
            snap = self._snaps.get(name)
            if snap is not None and now - snap.checked_at < self._fresh_s:
                return snap
            study = self._service.get_study(name)
            counts = {
                s.value: self._service.list_trials(name, state=s, offset=0, limit=1).total
                for s in _COUNTED
            }
            key = (study.id, study.created_at, study.n_trials, study.state, *counts.values())
            if snap is not None and snap.key == key:
                running = counts[TrialState.RUNNING.value] > 0
                if not running or now - snap.loaded_at < self._max_age_s:
                    snap.checked_at = now
                    snap.study = study
                    return snap
            trials = self._load(name)
            version = "-".join(str(k) for k in (*key[:1], *key[2:]))
            if counts[TrialState.RUNNING.value]:
                version += f"-t{int(time.time() // self._max_age_s)}"
            snap = Snapshot(
                study=study,
                trials=trials,
                counts=counts,
                key=key,
                loaded_at=now,
                checked_at=now,
                version=version,
            )
            with self._lock:
                self._snaps[name] = snap
                self._snaps.move_to_end(name)
                while len(self._snaps) > self._max_studies:
                    old, _ = self._snaps.popitem(last=False)
                    self._locks.pop(old, None)
            return snap

    def _load(self, name: str) -> list[Trial]:
        out: list[Trial] = []
        while True:
            page = self._service.list_trials(name, offset=len(out), limit=MAX_PAGE_LIMIT)
            out.extend(page.items)
            if not page.items or len(out) >= page.total:
                return out

    def clear(self) -> None:
        with self._lock:
            self._snaps.clear()


_CACHE_ATTR = "autotune_snapshots"
_create_lock = threading.Lock()


def snapshot_cache(state: Any, service: StudyService) -> SnapshotCache:
    """The cache kept on an app's ``state`` (made on first use) for ``service``."""
    cache = getattr(state, _CACHE_ATTR, None)
    if cache is None:
        with _create_lock:
            cache = getattr(state, _CACHE_ATTR, None)
            if cache is None:
                cache = SnapshotCache(service)
                setattr(state, _CACHE_ATTR, cache)
    return cache
