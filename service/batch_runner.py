"""One batch of queued requests through the model, and its answers back to them.

The scheduler (service/batcher.py) decides what runs together and when, and
submits `execute` to its `InferenceThread` (never the event loop); this module
runs what it chose: packs the rows, calls `run(batch, outputs)`, and hands each request its own
rows of the result on the loop, or `BatchFailed` when the run raised (only the
requests in that batch fail). A request that stopped waiting meanwhile (its
deadline, its client gone) is skipped; its rows' answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np

from service import tracing
from service.batch import Batch, PackBuffers

log = logging.getLogger("convserve.batcher")

RunFn = Callable[[np.ndarray, list[str]], dict[str, np.ndarray]]


class BatchFailed(Exception):
    """`run` raised for the batch this request was part of."""


@dataclass
class BatchObserver:
    """Hooks for metrics; the defaults do nothing."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_queue_wait: Callable[[float], None] = lambda seconds: None
    on_queue_depth: Callable[[int], None] = lambda rows: None
    on_padding: Callable[[int], None] = lambda rows: None


@dataclass(eq=False)
class Item:
    """One request's rows while they queue and run."""

    array: np.ndarray
    outputs: Sequence[str]
    future: asyncio.Future
    enqueued: float
    pending: bool = True
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    span: object | None = field(default=None, repr=False)  # the request's, when tracing


class BatchRunner:
    """`execute` runs a batch (in the thread that calls it: the scheduler's inference
    thread); `done()` on the loop after its answers are out.

    `done` comes with each batch, not at construction: the scheduler owns this runner,
    and a runner holding the scheduler's bound method would make a reference cycle that
    keeps an unloaded model's session alive until the cyclic collector runs.
    """

    def __init__(
        self,
        run: RunFn,
        observer: BatchObserver,
        tracer: tracing.BatchTracer | None,
    ) -> None:
        self._run = run
        self._observer = observer
        self._tracer = tracer
        self._buffers = PackBuffers()  # what the inference threads pack batches into

    def execute(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[Item],
        batch: Batch,
        outputs: list[str],
        done: Callable[[], None],
    ) -> None:
        """Runs in the inference thread; hands the results back to the loop."""
        start = time.perf_counter()
        padded = 0  # zero rows that really ran
        try:
            array = batch.pack(self._buffers)  # ValueError: rows of different shapes
            padded = batch.padding
            if self._tracer is None:
                result, error = self._run(array, outputs), None
            else:
                with self._tracer.batch([i.span for i in items], batch.rows, len(array)):
                    result, error = self._run(array, outputs), None
            batch.check(result)
        except Exception as exc:  # also rows of different shapes: fail these, keep serving
            result, error = None, exc
        elapsed = time.perf_counter() - start
        with suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(
                self._finish, items, batch, result, error, padded, elapsed, done
            )

    def _finish(
        self,
        items: list[Item],
        batch: Batch,
        result: dict[str, np.ndarray] | None,
        error: Exception | None,
        padded: int,
        elapsed: float,
        done: Callable[[], None],
    ) -> None:
        self._observer.on_batch(batch.rows, elapsed)
        if padded:
            self._observer.on_padding(padded)
        answers = batch.split(result, [item.outputs for item in items]) if error is None else None
        for i, item in enumerate(items):
            if item.timer is not None:
                item.timer.cancel()
            if item.future.done():
                continue
            if answers is None:
                item.future.set_exception(
                    BatchFailed(f"inference failed: {type(error).__name__}: {error}")
                )
            else:
                item.future.set_result(answers[i])
        if error is not None:
            log.error("a batch of %d rows failed: %r", batch.rows, error)
        done()
