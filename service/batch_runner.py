"""One batch of queued requests through the model, and its answers back to them.

The scheduler (service/batcher.py) decides what runs together and when, and
submits `execute` to its `InferenceThread` (never the event loop); this module
runs what it chose: makes the rows of deferred items (`Item.load`, e.g. one
upload decoded right here: the serial lane, service/serial_lane.py), packs the
rows, calls `run(batch, outputs)`, and hands each request its own rows of the
result on the loop, or `BatchFailed` when the run raised (only the requests in
that batch fail; a failed `load` fails only its own item, with its own error).
A request that stopped waiting meanwhile (its deadline, its client gone) is
skipped: its deferred rows are never made, and its rows' answer is dropped.
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
    """One request's rows while they queue and run: `array`, or the one row that `load`
    makes in the inference thread just before it runs (`array` None until then)."""

    array: np.ndarray | None
    outputs: Sequence[str]
    future: asyncio.Future
    enqueued: float
    load: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    pending: bool = True
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    span: object | None = field(default=None, repr=False)  # the request's, when tracing
    rows: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if self.array is not None:
            self.rows = len(self.array)


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
        outputs: list[str],
        pad_to: Callable[[int], int],
        done: Callable[[], None],
    ) -> None:
        """Runs in the inference thread; hands the results back to the loop."""
        failed = _load(items)
        ready = [item for item in items if item not in failed]
        rows = sum(item.rows for item in ready)
        batch = Batch([item.array for item in ready], pad_to(rows) if rows else 0)
        start = time.perf_counter()
        padded = 0  # zero rows that really ran
        result: dict[str, np.ndarray] | None = None
        error: Exception | None = None
        try:
            if ready:
                array = batch.pack(self._buffers)  # ValueError: rows of different shapes
                padded = batch.padding
                if self._tracer is None:
                    result = self._run(array, outputs)
                else:
                    with self._tracer.batch([i.span for i in ready], batch.rows, len(array)):
                        result = self._run(array, outputs)
                batch.check(result)
        except Exception as exc:  # also rows of different shapes: fail these, keep serving
            result, error = None, exc
        elapsed = time.perf_counter() - start
        with suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(
                self._finish, ready, failed, batch, result, error, padded, elapsed, done
            )

    def _finish(
        self,
        items: list[Item],
        failed: dict[Item, Exception | None],
        batch: Batch,
        result: dict[str, np.ndarray] | None,
        error: Exception | None,
        padded: int,
        elapsed: float,
        done: Callable[[], None],
    ) -> None:
        if items:  # something ran
            self._observer.on_batch(batch.rows, elapsed)
        if padded:
            self._observer.on_padding(padded)
        for item, why in failed.items():
            if item.timer is not None:
                item.timer.cancel()
            if why is not None and not item.future.done():
                item.future.set_exception(why)
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
        if error is None and not any(failed.values()):
            done()
        else:  # after the failed requests' callbacks have dropped their other rows
            asyncio.get_running_loop().call_soon(done)


def _load(items: list[Item]) -> dict[Item, Exception | None]:
    """Make the deferred items' rows (in the inference thread); those that did not get
    any: their `load`'s exception, or None when nobody waits for them any more."""
    failed: dict[Item, Exception | None] = {}
    for item in items:
        load, item.load = item.load, None
        if load is None:
            continue
        # read from this thread: at worst one image is made for a request that just left
        if item.future.done():
            failed[item] = None
            continue
        try:
            item.array = load()
        except Exception as exc:  # e.g. the upload is not an image: only this item fails
            failed[item] = exc
    return failed
