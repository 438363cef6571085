"""Prometheus metrics of the model server, exposed on ``/metrics``.

Requests, errors and a latency histogram by model, version, alias and endpoint; rows predicted;
micro-batch sizes; model loads. ``prometheus_client`` writes the exposition format when it is
installed; otherwise a small built-in writer produces the same text format (version 0.0.4), so the
server never needs the package. Each :class:`ServingMetrics` has its own registry, so several
servers in one process (tests) do not share counts.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["ServingMetrics", "RequestSeries", "LATENCY_BUCKETS_S", "BATCH_BUCKETS", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Online inference lives between 0.1 ms and a second; finer buckets at the low end.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_REQ_LABELS = ("model", "version", "alias", "endpoint", "code")
_LAT_LABELS = ("model", "version", "alias", "endpoint")
_ROW_LABELS = ("model", "version", "alias")
_BATCH_LABELS = ("model", "version")
_LOAD_LABELS = ("model", "version", "outcome")

_DEFS: list[tuple[str, str, str, tuple[str, ...], Sequence[float] | None]] = [
    ("requests", "counter", "Prediction requests, by outcome code.", _REQ_LABELS, None),
    ("errors", "counter", "Prediction requests that failed (HTTP status >= 400).", _REQ_LABELS, None),
    ("request_duration_seconds", "histogram", "Prediction latency inside the server.", _LAT_LABELS, LATENCY_BUCKETS_S),
    ("rows", "counter", "Rows predicted.", _ROW_LABELS, None),
    ("batch_size", "histogram", "Rows per model call (micro-batches).", _BATCH_LABELS, BATCH_BUCKETS),
    ("model_loads", "counter", "Model loads, by outcome.", _LOAD_LABELS, None),
]  # fmt: skip
PREFIX = "autotune_serving_"


# The request metrics: every prediction request updates them, so they live in plain Python
# cells under one lock (:class:`_Store`) whichever backend writes the exposition.
_REQUEST_METRICS = frozenset({"requests", "errors", "request_duration_seconds", "rows"})


class ServingMetrics:
    """The server's metrics. Thread-safe.

    Args:
        use_prometheus_client: ``None`` uses the package when importable; ``False`` forces the
            built-in writer (tests compare both).
    """

    def __init__(self, *, use_prometheus_client: bool | None = None) -> None:
        # The request metrics, updated on every request: plain cells under one lock, bound
        # once per series (RequestSeries). prometheus_client's children take a lock and run
        # checks per increment: 1.7 us a request against 0.5 us here, in-process.
        self._store = _Store()
        self._backend: _Backend = self._store  # the rest (batch sizes, loads) and the writer
        if use_prometheus_client is not False:
            try:
                self._backend = _PromBackend(self._store)
            except ImportError:
                if use_prometheus_client:
                    raise
        self._series: dict[tuple[str, str, str, str], RequestSeries] = {}

    @property
    def backend(self) -> str:
        return type(self._backend).__name__

    def observe_request(
        self,
        *,
        model: str,
        version: str,
        alias: str,
        endpoint: str,
        code: int,
        seconds: float,
        rows: int = 0,
    ) -> None:
        b = self._store
        b.inc("requests", (model, version, alias, endpoint, str(code)))
        if code >= 400:
            b.inc("errors", (model, version, alias, endpoint, str(code)))
        b.observe("request_duration_seconds", (model, version, alias, endpoint), seconds)
        if rows:
            b.inc("rows", (model, version, alias), rows)

    def request_series(
        self, *, model: str, version: str, alias: str, endpoint: str
    ) -> RequestSeries:
        """The series a successful request of these labels updates, bound once: the hot path
        then pays one lock and four additions, no label lookups."""
        key = (model, version, alias, endpoint)
        series = self._series.get(key)
        if series is None:
            b = self._store
            series = RequestSeries(
                b.lock,
                b.cell("requests", (*key, "200")),
                b.histogram("request_duration_seconds", key),
                b.cell("rows", (model, version, alias)),
            )
            self._series = {**self._series, key: series}  # replaced whole: lock-free readers
        return series

    def observe_batch(self, *, model: str, version: str, rows: int) -> None:
        self._backend.observe("batch_size", (model, version), rows)

    def model_loaded(self, *, model: str, version: str, ok: bool) -> None:
        self._backend.inc("model_loads", (model, version, "ok" if ok else "failed"))

    def render(self) -> bytes:
        """The exposition text (Prometheus text format 0.0.4)."""
        return self._backend.render()


class RequestSeries:
    """The pre-bound series of one (model, version, alias, endpoint): requests with code 200,
    the latency histogram and the rows counter."""

    __slots__ = ("_lock", "_count", "_latency", "_rows")

    def __init__(
        self, lock: threading.Lock, count: list[float], latency: list[float], rows: list[float]
    ) -> None:
        self._lock = lock
        self._count = count
        self._latency = latency  # bucket counts (not cumulative), sum, count
        self._rows = rows

    def ok(self, seconds: float, rows: int) -> None:
        """Count one successful request of ``rows`` rows that took ``seconds``."""
        i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        h = self._latency
        with self._lock:
            self._count[0] += 1
            self._rows[0] += rows
            if i < len(LATENCY_BUCKETS_S):
                h[i] += 1
            h[-2] += seconds
            h[-1] += 1


class _Backend:
    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None: ...
    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None: ...
    def render(self) -> bytes: ...


class _PromBackend(_Backend):
    """prometheus_client's metrics and writer; the request metrics come from ``store``
    through a collector of their own."""

    def __init__(self, store: _Store) -> None:
        import prometheus_client as pc

        # The *_created series double the output and nothing here reads them.
        pc.disable_created_metrics()
        self._pc = pc
        self.registry = pc.CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        for name, kind, doc, labels, buckets in _DEFS:
            if name in _REQUEST_METRICS:
                continue
            full = PREFIX + (name[: -len("_total")] if name.endswith("_total") else name)
            if kind == "counter":
                self._metrics[name] = pc.Counter(full, doc, labels, registry=self.registry)
            else:
                self._metrics[name] = pc.Histogram(
                    full, doc, labels, buckets=buckets, registry=self.registry
                )
        self.registry.register(_StoreCollector(store))
        # labels() takes a lock and validates; the children are cached here instead.
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _child(self, name: str, labels: tuple[str, ...]) -> Any:
        key = (name, labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._metrics[name].labels(*labels)
        return c

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        self._child(name, labels).inc(amount)

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).observe(value)

    def render(self) -> bytes:
        return self._pc.generate_latest(self.registry)


class _StoreCollector:
    """The request metrics of a :class:`_Store`, for a prometheus_client registry."""

    def __init__(self, store: _Store) -> None:
        self._store = store

    def describe(self) -> list[Any]:
        return []  # names are checked when collected; nothing else registers them

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        counters, hists = self._store.snapshot(_REQUEST_METRICS)
        for name, kind, doc, label_names, buckets in _DEFS:
            if name not in _REQUEST_METRICS:
                continue
            full = PREFIX + name
            if kind == "counter":
                c = CounterMetricFamily(full, doc, labels=label_names)
                for labels, v in counters.get(name, {}).items():
                    c.add_metric(labels, v)
                yield c
                continue
            assert buckets is not None
            h = HistogramMetricFamily(full, doc, labels=label_names)
            for labels, cells in hists.get(name, {}).items():
                cum, out = 0.0, []
                for le, n in zip(buckets, cells, strict=False):
                    cum += n
                    out.append((_num(float(le)), cum))
                out.append(("+Inf", cells[-1]))
                h.add_metric(labels, out, sum_value=cells[-2])
            yield h


class _Store(_Backend):
    """The metrics in plain cells under one lock, and a writer of the text format (the whole
    exposition for servers without prometheus_client; the request metrics in any case)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._counters: dict[str, dict[tuple[str, ...], list[float]]] = {}
        # histogram series: labels -> [bucket counts..., sum, count]
        self._hists: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self._defs = {d[0]: d for d in _DEFS}

    def cell(self, name: str, labels: tuple[str, ...]) -> list[float]:
        """The one-element list holding a counter's value (update it under :attr:`lock`)."""
        with self.lock:
            return self._cell(name, labels)

    def histogram(self, name: str, labels: tuple[str, ...]) -> list[float]:
        """A histogram series' cells: bucket counts (not cumulative), sum, count."""
        with self.lock:
            return self._histogram(name, labels)

    def _cell(self, name: str, labels: tuple[str, ...]) -> list[float]:  # under the lock
        series = self._counters.setdefault(name, {})
        c = series.get(labels)
        if c is None:
            c = series[labels] = [0.0]
        return c

    def _histogram(self, name: str, labels: tuple[str, ...]) -> list[float]:  # under the lock
        series = self._hists.setdefault(name, {})
        h = series.get(labels)
        if h is None:
            buckets = self._defs[name][4]
            assert buckets is not None
            h = series[labels] = [0.0] * (len(buckets) + 2)
        return h

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        with self.lock:
            self._cell(name, labels)[0] += amount

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        buckets = self._defs[name][4]
        assert buckets is not None
        i = bisect.bisect_left(buckets, value)
        with self.lock:
            h = self._histogram(name, labels)
            if i < len(buckets):
                h[i] += 1
            h[-2] += value
            h[-1] += 1

    def snapshot(
        self, names: frozenset[str] | None = None
    ) -> tuple[
        dict[str, dict[tuple[str, ...], float]], dict[str, dict[tuple[str, ...], list[float]]]
    ]:
        """Copies of the counters and histograms (of ``names``, or all), taken under the lock."""
        with self.lock:
            counters = {
                n: {k: c[0] for k, c in series.items()}
                for n, series in self._counters.items()
                if names is None or n in names
            }
            hists = {
                n: {k: list(h) for k, h in series.items()}
                for n, series in self._hists.items()
                if names is None or n in names
            }
        return counters, hists

    def render(self) -> bytes:
        out: list[str] = []
        counters, hists = self.snapshot()
        for name, kind, doc, label_names, buckets in _DEFS:
            full = PREFIX + name
            if kind == "counter":
                out.append(f"# HELP {full}_total {doc}")
                out.append(f"# TYPE {full}_total counter")
                for labels, v in counters.get(name, {}).items():
                    out.append(f"{full}_total{_fmt_labels(label_names, labels)} {_num(v)}")
                continue
            assert buckets is not None
            out.append(f"# HELP {full} {doc}")
            out.append(f"# TYPE {full} histogram")
            for labels, h in hists.get(name, {}).items():
                cum = 0.0
                for le, n in zip(buckets, h, strict=False):
                    cum += n
                    lab = _fmt_labels((*label_names, "le"), (*labels, _num(float(le))))
                    out.append(f"{full}_bucket{lab} {_num(cum)}")
                lab = _fmt_labels((*label_names, "le"), (*labels, "+Inf"))
                out.append(f"{full}_bucket{lab} {_num(h[-1])}")
                out.append(f"{full}_sum{_fmt_labels(label_names, labels)} {_num(h[-2])}")
                out.append(f"{full}_count{_fmt_labels(label_names, labels)} {_num(h[-1])}")
        return ("\n".join(out) + "\n").encode()


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(names: Sequence[str], values: Sequence[str]) -> str:
    # Sorted by label name, as prometheus_client writes them.
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) else f"{float(v):.1f}"
