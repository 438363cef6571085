"""The model server's runtime: loaded versions, the alias snapshot, the poller, the predict call.

:class:`ModelServer` holds the loaded models and a snapshot of the alias table. A poller thread
re-reads the (small) alias table every ``poll_interval_s``; when an alias moved it loads the new
version (verify the artifact's sha256, load it with the safe loader of its format, check it on the
stored input example) and only then swaps the alias to it. A request holds the loaded version it
started with, and the previous holder of every alias stays loaded, so a move or a rollback never
fails a request in flight and never waits for a load.

Prediction by entity keys (issue 7): a :class:`FeatureResolver` turns ``{"entities": [...]}``
into feature rows before the same signature check; the feature store plugs one in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import operator
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autotune.errors import AutotuneError, ValidationError
from serving.batching import BatchingConfig, MicroBatcher
from serving.errors import InvalidInputError
from serving.loaders import LoaderOptions, Predictor, load_predictor
from serving.metrics import RequestSeries, ServingMetrics
from serving.registry import DEFAULT_ALIAS, ModelRegistry, check_prediction, parse_ref
from serving.schemas import ModelVersion, Signature

__all__ = [
    "ModelServer",
    "ServerConfig",
    "LoadedVersion",
    "FeatureResolver",
    "PredictionLogger",
    "MAX_ROWS",
    "LOAD_RETRY_S",
    "compile_rows_check",
    "Authorizer",
]

log = logging.getLogger("autotune.serving")
# Rows in one request; bigger inputs belong to a batch job, not an online endpoint.
MAX_ROWS = 10_000
# A version that failed to load (or failed its check) is retried by the poller after this long.
LOAD_RETRY_S = 30.0
# Large requests run in a worker thread so the event loop keeps serving small ones.
INLINE_ROWS = 512


# Decides whether a prediction request may use a model: called with the request's ASGI scope and
# the model name; raises an AutotuneError (401, 403) to refuse; may return an awaitable.
Authorizer = Callable[[Mapping[str, Any], str], Awaitable[None] | None]


class FeatureResolver(Protocol):
    """Turns entity keys into feature rows for a model (the feature store implements it).

    Called from a worker thread. Returns one ``{feature: value}`` row per entity; the rows then
    pass the same signature check as rows sent directly.
    """

    def resolve(
        self, version: ModelVersion, entities: list[dict[str, Any]]
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ServerConfig:
    """Settings of a model server.

    Args:
        poll_interval_s: how often the alias table is re-read (alias moves show up this fast).
        batching: micro-batching settings.
        loader: loader options (skops trusted types, XGBoost threads).
        log_sample_rate: fraction of predictions logged (with inputs, outputs and request id) to
            the ``autotune.serving.predictions`` logger.
        max_loaded: versions kept loaded beyond the alias holders and their predecessors.
        preload: load every alias holder at start (ready only when done).
        import_roots: directories the REST ``register`` may read ``artifact_path`` from.
        predict_threads: worker threads for model calls.
    """

    poll_interval_s: float = 1.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    log_sample_rate: float = 0.0
    max_loaded: int = 8
    preload: bool = True
    import_roots: tuple[str, ...] = ("autotune-artifacts",)
    predict_threads: int = 2


class PredictionLogger:
    """Logs a sample of predictions as JSON lines, each with its request id."""

    def __init__(self, sample_rate: float, logger: logging.Logger | None = None) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"log_sample_rate must be in [0, 1], got {sample_rate}")
        self.sample_rate = sample_rate
        self.logger = logger or logging.getLogger("autotune.serving.predictions")

    def maybe_log(
        self, *, request_id: str, lv: LoadedVersion, alias: str | None, x: np.ndarray,
        y: np.ndarray, seconds: float,
    ) -> None:  # fmt: skip
        if self.sample_rate <= 0.0 or random.random() >= self.sample_rate:
            return
        self.logger.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "model": lv.model_label,
                    "version": lv.version.version,
                    "alias": alias,
                    "rows": int(x.shape[0]),
                    "inputs": x[:10].tolist(),
                    "outputs": y[:10].tolist(),
                    "latency_ms": round(seconds * 1000, 3),
                    "time": time.time(),
                }
            )
        )


class LoadedVersion:
    """A version ready to predict: its record, its predictor and (optionally) its batcher.

    Per-version work is done once here, not per request: the compiled input check
    (:meth:`rows_to_matrix`) and the metric series of each alias and endpoint it serves.
    """

    def __init__(
        self,
        version: ModelVersion,
        predictor: Predictor,
        batcher: MicroBatcher | None,
        *,
        metrics: ServingMetrics | None = None,
        model_label: str | None = None,
    ) -> None:
        self.version = version
        # The name the server knows the model by (``project~name`` outside the default
        # project): metrics and logs of same-named models of two projects stay apart.
        self.model_label = model_label or version.name
        self.predictor = predictor
        self.batcher = batcher
        self.last_used = time.monotonic()
        self.number = version.version
        self.label = str(version.version)
        self.rows_to_matrix: Callable[[Any], np.ndarray] = compile_rows_check(version.signature)
        self._metrics = metrics or ServingMetrics()
        self._series: dict[tuple[str | None, str], RequestSeries] = {}
        self._max_batch = batcher.config.max_batch_size if batcher is not None else 0

    def series(self, alias: str | None, endpoint: str) -> RequestSeries:
        """The pre-bound metric series of successful requests through ``alias``."""
        s = self._series.get((alias, endpoint))
        if s is None:
            s = self._metrics.request_series(
                model=self.model_label, version=self.label, alias=alias or "", endpoint=endpoint
            )
            self._series = {**self._series, (alias, endpoint): s}
        return s

    def predict_soon(self, x: np.ndarray) -> np.ndarray | asyncio.Future[np.ndarray]:
        """Predict ``x`` (n_rows, n_features) from a running event loop: through the
        micro-batcher when it is small enough to share a call (a future), on the event loop
        when small (the predictions), else in a worker thread (a future)."""
        self.last_used = time.monotonic()
        n = x.shape[0]
        if n < self._max_batch:
            assert self.batcher is not None
            return self.batcher.submit(x)
        if n <= INLINE_ROWS:
            return self.predictor.predict(x)
        return asyncio.get_running_loop().run_in_executor(None, self.predictor.predict, x)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """:meth:`predict_soon`, awaited."""
        y = self.predict_soon(x)
        return await y if isinstance(y, asyncio.Future) else y


def compile_rows_check(signature: Signature) -> Callable[[Any], np.ndarray]:
    """``rows -> (n_rows, n_features) float32 matrix`` for one signature, compiled once.

    For the common signature (every feature a non-nullable float) the check is a C-level
    ``itemgetter`` per row and one set of the value types: exactly-right rows never touch a
    Python loop over features. Anything else (and any row that fails the quick check) goes
    through :meth:`Signature.to_matrix`, which names every missing, extra and wrongly typed
    feature in its 422.
    """
    full = signature.to_matrix
    names = signature.names
    if not all(f.type == "float" and not f.nullable for f in signature.inputs):
        return full
    n = len(names)
    getter = operator.itemgetter(*names)
    floatish = frozenset((float, int))
    chain = itertools.chain.from_iterable

    def check(rows: Any) -> np.ndarray:
        if type(rows) is list and rows:
            try:
                if len(rows) == 1:
                    row = rows[0]
                    if type(row) is dict and len(row) == n:
                        values = getter(row)
                        if n == 1:
                            values = (values,)
                        if set(map(type, values)) <= floatish:
                            return np.array(values, dtype=np.float32).reshape(1, n)
                elif all(type(r) is dict and len(r) == n for r in rows):
                    table = list(map(getter, rows))
                    if n == 1:
                        table = [(v,) for v in table]
                    if set(map(type, chain(table))) <= floatish:
                        flat = np.fromiter(chain(table), dtype=np.float32, count=len(rows) * n)
                        return flat.reshape(len(rows), n)
            except KeyError:
                pass
        return full(rows)

    return check


class ModelServer:
    """Serves the versions of a :class:`ModelRegistry`. Thread-safe.

    Args:
        registry: the registry (its database and artifact store).
        config: server settings.
        resolver: optional entity -> features resolver (the feature store).
        metrics: where to count (default: a fresh :class:`ServingMetrics`).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        config: ServerConfig | None = None,
        *,
        resolver: FeatureResolver | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or ServerConfig()
        self.resolver = resolver
        self.metrics = metrics or ServingMetrics()
        self.prediction_log = PredictionLogger(self.config.log_sample_rate)
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.predict_threads, thread_name_prefix="predict"
        )
        # Published snapshots: replaced whole (never mutated), so readers need no lock.
        self._aliases: dict[tuple[str, str], int] = {}
        self._latest: dict[str, int] = {}
        self._in_registry: frozenset[tuple[str, str]] = frozenset()  # aliases, loaded or not
        self._previous: dict[tuple[str, str], int] = {}
        self._loaded: dict[tuple[str, int], LoadedVersion] = {}
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._load_locks: dict[tuple[str, int], threading.Lock] = {}
        self._failed: dict[tuple[str, int], float] = {}  # versions that failed to load, when
        self._guard = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._poller: threading.Thread | None = None
        self.ready = False
        self.last_poll_error: str | None = None
        # The prediction paths call this first (None: no authorization, every model is open).
        self.authorize: Authorizer | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Read the alias table (and preload its versions), then poll it in the background."""
        if self._poller is not None:
            return
        try:
            self.refresh()
        except Exception as e:  # not ready yet; the poller keeps trying
            self.last_poll_error = f"{type(e).__name__}: {e}"
            log.warning("initial registry read failed: %s", e)
        self._poller = threading.Thread(target=self._poll, name="alias-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.config.poll_interval_s)
            self._poke.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                self.last_poll_error = None
            except Exception as e:  # keep serving what is loaded; say why in /v2/health/ready
                self.last_poll_error = f"{type(e).__name__}: {e}"
                log.warning("alias poll failed: %s", e)

    def refresh(self) -> None:
        """Re-read the alias table; load what newly holds an alias, then publish the swap."""
        with self._refresh_lock:
            table, latest = self.registry.serving_snapshot()
            current = self._aliases
            aliases = dict(current)
            previous = dict(self._previous)
            for key, version in table.items():
                if current.get(key) == version:
                    continue
                name = key[0]
                if self.config.preload or (name, current.get(key, -1)) in self._loaded:
                    failed_at = self._failed.get((name, version))
                    if failed_at is not None and time.monotonic() - failed_at < LOAD_RETRY_S:
                        continue
                    try:
                        self._load(name, version)
                    except AutotuneError as e:
                        # Keep serving the old holder; try this version again in a while.
                        self._failed[(name, version)] = time.monotonic()
                        log.error("not swapping %s:%s to v%s: %s", name, key[1], version, e)
                        continue
                    self._failed.pop((name, version), None)
                if key in current:
                    previous[key] = current[key]
                aliases[key] = version
            for key in set(aliases) - set(table):
                del aliases[key]
            self._aliases = aliases
            self._in_registry = frozenset(table)
            self._latest = latest
            self._previous = previous
            self.ready = True
            self._evict()

    def _evict(self) -> None:
        keep = {(n, v) for (n, _a), v in self._aliases.items()}
        keep |= {(n, v) for (n, _a), v in self._previous.items()}
        with self._guard:
            others = sorted(
                (k for k in self._loaded if k not in keep),
                key=lambda k: self._loaded[k].last_used,
                reverse=True,
            )
            drop = set(others[self.config.max_loaded :])
            if drop:
                # Requests holding one finish normally; it is only dropped from the (new) map.
                self._loaded = {k: v for k, v in self._loaded.items() if k not in drop}

    # -------------------------------------------------------------------------------- loading

    def _version(self, name: str, version: int) -> ModelVersion:
        key = (name, version)
        mv = self._versions.get(key)
        if mv is None:
            mv = self.registry.get_version(name, version)
            self._versions[key] = mv  # versions are immutable: cache forever
        return mv

    def _load(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        lv = self._loaded.get(key)
        if lv is not None:
            return lv
        with self._guard:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            lv = self._loaded.get(key)
            if lv is not None:
                return lv
            try:
                mv = self._version(name, version)
                data = self.registry.store.get(mv.artifact)
                predictor = load_predictor(data, mv, self.config.loader)
                if mv.input_example:
                    check_prediction(predictor, mv)
            except AutotuneError:
                self.metrics.model_loaded(model=name, version=str(version), ok=False)
                raise
            batcher = None
            if self.config.batching.enabled:
                label = str(version)

                def on_batch(rows: int, _n: str = name, _v: str = label) -> None:
                    self.metrics.observe_batch(model=_n, version=_v, rows=rows)

                batcher = MicroBatcher(
                    predictor.predict,
                    self.config.batching,
                    executor=self._executor,
                    on_batch=on_batch,
                    name=f"{name} v{version}",
                )
            lv = LoadedVersion(mv, predictor, batcher, metrics=self.metrics, model_label=name)
            with self._guard:
                self._loaded = {**self._loaded, key: lv}
            self.metrics.model_loaded(model=name, version=str(version), ok=True)
            log.info("loaded %s v%s (%s)", name, version, mv.artifact.format)
            return lv

    # ------------------------------------------------------------------------------ resolving

    def resolve(self, name: str, ref: int | str | None) -> tuple[int, str | None] | None:
        """(version, alias) from the in-memory snapshot, or None when it does not know."""
        r = parse_ref(ref) if ref is not None else None
        if isinstance(r, int):
            return r, None
        alias = r or DEFAULT_ALIAS
        v = self._aliases.get((name, alias))
        if v is not None:
            return v, alias
        if r is None and name in self._latest and (name, DEFAULT_ALIAS) not in self._in_registry:
            return self._latest[name], None
        return None

    def lookup(self, name: str, ref: int | str | None) -> tuple[LoadedVersion, str | None] | None:
        """The loaded version ``ref`` names from memory alone (the hot path), or None when that
        needs the database or a load (then :meth:`get`)."""
        hit = self.resolve(name, ref)
        if hit is None:
            return None
        lv = self._loaded.get((name, hit[0]))
        return None if lv is None else (lv, hit[1])

    def observe_failure(
        self, name: str, lv: LoadedVersion | None, alias: str | None, endpoint: str, code: int,
        seconds: float,
    ) -> None:  # fmt: skip
        """Count a failed prediction request (labelled by what it resolved to, if anything)."""
        if lv is not None:
            model, version = lv.model_label, lv.label
        else:
            # An unknown name is counted under one label: clients cannot grow the label set.
            model, version = (name if name in self._latest else "<unknown>"), ""
        self.metrics.observe_request(
            model=model, version=version, alias=alias or "", endpoint=endpoint, code=code,
            seconds=seconds,
        )  # fmt: skip

    async def get(self, name: str, ref: int | str | None) -> tuple[LoadedVersion, str | None]:
        """The loaded version that ``ref`` names (loading it in a thread if needed)."""
        hit = self.resolve(name, ref)
        if hit is None:  # not in the snapshot: maybe created since the last poll
            hit = await asyncio.to_thread(self.registry.resolve, name, ref)
        version, alias = hit
        lv = self._loaded.get((name, version))
        if lv is None:
            lv = await asyncio.to_thread(self._load, name, version)
        return lv, alias

    async def features_to_matrix(self, lv: LoadedVersion, payload: Any) -> np.ndarray:
        """Validate ``{"rows": [...]}`` or ``{"entities": [...]}`` into the model's matrix.

        Entities go through the feature resolver first, then the same signature check.
        """
        if not isinstance(payload, dict):
            raise InvalidInputError(
                'the body must be an object {"rows": [{feature: value}, ...]}', field="body"
            )
        keys = payload.keys() - {"id", "parameters"}
        if keys == {"rows"}:
            rows = payload["rows"]
        elif keys == {"entities"}:
            rows = await self._resolve_entities(lv, payload["entities"])
        else:
            raise InvalidInputError(
                'the body must have exactly one of "rows" (feature values) or "entities" '
                f"(entity keys), got {sorted(keys)}",
                field="body",
            )
        if isinstance(rows, list) and len(rows) > MAX_ROWS:
            raise InvalidInputError(
                f"{len(rows)} rows in one request; at most {MAX_ROWS}", field="rows"
            )
        return lv.version.signature.to_matrix(rows)

    async def _resolve_entities(self, lv: LoadedVersion, entities: Any) -> Any:
        if self.resolver is None:
            raise ValidationError(
                "this server has no feature store attached: send feature values as "
                '{"rows": [...]} instead of entity keys',
                field="entities",
            )
        if not isinstance(entities, list) or not entities:
            raise InvalidInputError(
                "entities must be a non-empty list of {key: value}", field="entities"
            )
        return await asyncio.to_thread(self.resolver.resolve, lv.version, entities)

    # --------------------------------------------------------------------------- alias moves

    def after_registry_change(self) -> None:
        """Pick up a registration or alias move made through this server at once (other
        servers see it within a poll)."""
        self.refresh()

    def import_path(self, path: str) -> Path:
        """``path`` if it lies under one of ``config.import_roots``, else a ValidationError."""
        p = Path(path).resolve()
        for root in self.config.import_roots:
            r = Path(root).resolve()
            if p == r or r in p.parents:
                return p
        raise ValidationError(
            f"artifact_path {path!r} is outside the directories this server imports from "
            f"({list(self.config.import_roots)}); upload the bytes as artifact_base64 instead",
            field="artifact_path",
        )

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "loaded": sorted(f"{n}:{v}" for n, v in list(self._loaded)),
            "aliases": {f"{n}:{a}": v for (n, a), v in sorted(self._aliases.items())},
            "last_poll_error": self.last_poll_error,
            "failed_loads": sorted(f"{n}:{v}" for n, v in list(self._failed)),
        }
