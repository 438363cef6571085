"""Micro-batching: concurrent small prediction requests coalesced into one model call.

Requests queue their rows; one runner task per model takes everything queued (up to
``max_batch_size`` rows), optionally waiting up to ``max_wait_ms`` after the oldest request for
company, calls the model once and hands each request its slice of the result. While the model is
busy, new requests pile up and form the next batch, so under load batches grow by themselves and
at low load nobody waits (the default ``max_wait_ms=0``). The queue is bounded: past
``max_queue`` waiting requests the server answers 503 (:class:`OverloadedError`) at once instead
of letting latency grow without limit (Clipper and Triton's dynamic batcher work this way).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from serving.errors import OverloadedError

__all__ = ["BatchingConfig", "MicroBatcher"]

# Turns of the event loop the runner yields before taking a batch (see _run).
YIELD_TURNS = 3


@dataclass(frozen=True)
class BatchingConfig:
    """Micro-batching settings.

    Args:
        enabled: coalesce concurrent requests; off, each request calls the model itself.
        max_batch_size: rows per model call; a larger request runs alone.
        max_wait_ms: how long the oldest queued request may wait for others.
        max_queue: requests waiting per model before the server answers 503.
    """

    enabled: bool = True
    max_batch_size: int = 256
    max_wait_ms: float = 0.0
    max_queue: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1 or self.max_wait_ms < 0:
            raise ValueError(
                "max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0, got "
                f"{self.max_batch_size}, {self.max_queue}, {self.max_wait_ms}"
            )


class MicroBatcher:
    """Coalesces ``predict`` calls on one model. Bound to the event loop that first uses it.

    Args:
        predict: the model call, (n_rows, n_features) -> (n_rows[, k]); run in ``executor``.
        config: sizes and waits.
        executor: the threads model calls run on (``None``: the loop's default).
        on_batch: called with the rows of each model call (metrics).
        inline_rows: batches up to this many rows run on the event loop, larger ones in
            ``executor``.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        config: BatchingConfig,
        *,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        name: str = "model",
        inline_rows: int = 512,
    ) -> None:
        self._predict = predict
        self.config = config
        self._executor = executor
        self._on_batch = on_batch
        self._name = name
        self._queue: deque[tuple[np.ndarray, asyncio.Future[np.ndarray], float]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._rows = 0  # rows queued
        self.inline_rows = inline_rows

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict ``x`` (n_rows, n_features) as part of a batch.

        Raises:
            OverloadedError: ``max_queue`` requests are already waiting.
        """
        if len(self._queue) >= self.config.max_queue:
            raise OverloadedError(
                f"model {self._name} has {len(self._queue)} requests queued (the limit); "
                "retry shortly or add servers",
                details={"queued": len(self._queue), "max_queue": self.config.max_queue},
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, fut, time.perf_counter()))
        self._rows += x.shape[0]
        if self._runner is None or self._runner.done():
            self._wakeup = asyncio.Event()
            self._runner = loop.create_task(self._run())
        elif self._wakeup is not None:
            self._wakeup.set()
        return await fut

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray], float]]:
        batch = [self._queue.popleft()]
        rows = batch[0][0].shape[0]
        while self._queue and rows + self._queue[0][0].shape[0] <= self.config.max_batch_size:
            item = self._queue.popleft()
            rows += item[0].shape[0]
            batch.append(item)
        self._rows -= rows
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.config.max_wait_ms / 1000.0
        assert self._wakeup is not None
        while self._queue:
            # Let the requests the loop is already parsing join: a few turns of the loop cost
            # microseconds, where each model call saved costs a hundred.
            for _ in range(YIELD_TURNS):
                await asyncio.sleep(0)
            # Then wait for company, for at most max_wait after the oldest request arrived.
            deadline = self._queue[0][2] + max_wait
            while (
                max_wait > 0
                and self._rows < self.config.max_batch_size
                and (remaining := deadline - time.perf_counter()) > 0
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            live = [b for b in batch if not b[1].done()]  # a cancelled request drops out
            if not live:
                continue
            xs = [b[0] for b in live]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
            try:
                if x.shape[0] <= self.inline_rows:
                    # Small batches run on the loop: a hop to a thread and back costs more than
                    # the model call, and the GIL handoff can stall it for a switch interval.
                    y = self._predict(x)
                else:
                    y = await loop.run_in_executor(self._executor, self._predict, x)
            except BaseException as e:  # hand the model's error to every request of the batch
                for _, fut, _t in live:
                    if not fut.done():
                        fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            if self._on_batch is not None:
                self._on_batch(x.shape[0])
            start = 0
            for xi, fut, _t in live:
                n = xi.shape[0]
                if not fut.done():
                    fut.set_result(y[start : start + n])
                start += n
