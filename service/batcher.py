"""Dynamic batching across concurrent requests: the scheduler. Knows neither HTTP nor onnxruntime.

Requests hand in N x ... arrays (or rows still to be made, `submit_deferred`:
the serial lane's encoded uploads, each decoded by the inference thread right
before it runs, service/serial_lane.py). While the inference thread is busy they queue;
when it frees up, queued items are packed (in arrival order, never splitting
an item) into one batch of at most `max_batch_size` rows and run as one call of
`run(batch, outputs)`. The batch waits for more rows only while more are known
to be on their way (`incoming`: requests still decoding) and the oldest row
has waited less than `max_delay_s`: with nothing else coming, a request runs at
once, so batching costs no latency when there is nothing to batch.

An item larger than `max_batch_size` is split into chunks and reassembled in
order. A failing batch fails only its own items. `pad_to` may round a batch
up with zero rows (to sizes the model has already run; their outputs are
dropped). Packing, padding and slicing are `Batch`'s (service/batch.py); this
module decides what runs together and when, and `BatchRunner`
(service/batch_runner.py) runs it: packing and all inference in the
`InferenceThread` (service/inference_thread.py; by default ONE thread;
`max_concurrent` batches may run at once when it has more, like Triton's
instance count), never on the event loop. Everything here runs on the event
loop and needs no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from service import tracing
from service.batch import chunks, join
from service.batch_runner import BatchFailed, BatchObserver, BatchRunner, Item, RunFn
from service.inference_thread import InferenceThread

# the scheduler's vocabulary for its callers (BatchFailed and BatchObserver live with the runner)
__all__ = ["BatchFailed", "BatchObserver", "Batcher", "DeadlineExceeded", "QueueFull", "RunFn"]


class QueueFull(Exception):
    """The bounded queue cannot take these rows now; the client should retry."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its rows were computed."""


class Batcher:
    """Per-model dynamic batcher feeding one `InferenceThread`."""

    def __init__(
        self,
        run: RunFn,
        worker: InferenceThread,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        max_concurrent: int = 1,
        observer: BatchObserver | None = None,
        pad_to: Callable[[int], int] = lambda rows: rows,
        tracer: tracing.BatchTracer | None = None,
    ) -> None:
        self._tracer = tracer  # queue-wait and batch spans (service/tracing.py); None: off
        self._pad_to = pad_to  # batch size to run `rows` rows at (e.g. a warmed-up size)
        self._worker = worker
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.max_concurrent = max_concurrent  # batches of this model running at once
        self._observer = observer or BatchObserver()
        self._pending: deque[Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0
        self.queued_rows = 0
        self.incoming = 0  # requests announced (decoding) but not yet submitted
        self._runner = BatchRunner(run, self._observer, tracer)

    # ---- arrivals -------------------------------------------------------
    def announce(self) -> None:
        """A request for this model started decoding: worth waiting for."""
        self.incoming += 1

    def withdraw(self) -> None:
        """That request submitted or gave up; re-check whether to wait."""
        self.incoming -= 1
        if self._loop is not None and self._pending and not self._full:
            self._loop.call_soon(self._maybe_dispatch)

    def reshape(self, max_batch_size: int, max_concurrent: int) -> None:
        """The execution shape the tuner chose (at warm-up, before traffic)."""
        self.max_batch_size = max_batch_size
        self.max_concurrent = max_concurrent
        self._worker.grow(max_concurrent)

    def idle(self) -> bool:
        """Nothing of this model queued, running or decoding (event loop only)."""
        return not (self._running or self._pending or self.incoming)

    def claim(self) -> None:
        """A run outside the queue starts (event loop only): later arrivals queue behind it."""
        self._running += 1

    def release(self, rows: int, seconds: float) -> None:
        """That run ended (event loop only): counted as a batch; the queue moves on."""
        self._running -= 1
        if rows:  # 0: it never reached the model (failed to decode, or expired)
            self._observer.on_batch(rows, seconds)
        self._maybe_dispatch()

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """announce() on entry, withdraw() on exit: wrap the work before submit (decoding)."""
        self.announce()
        try:
            yield
        finally:
            self.withdraw()

    async def submit(
        self, array: np.ndarray, outputs: Sequence[str], deadline: float
    ) -> dict[str, np.ndarray]:
        """Rows of `array` through the model; `deadline` is time.monotonic() seconds."""
        loop = self._admit(len(array), deadline)
        if len(array) <= self.max_batch_size:
            return await self._answer(self._enqueue(loop, array, outputs, deadline))
        parts = chunks(array, self.max_batch_size)
        return await self._gather([self._enqueue(loop, p, outputs, deadline) for p in parts])

    async def submit_deferred(
        self, loads: Sequence[Callable[[], np.ndarray]], outputs: Sequence[str], deadline: float
    ) -> dict[str, np.ndarray]:
        """One row per `loads` call, made in the inference thread right before it runs (and
        only if the request still waits then); queued, limited, expired and counted as
        `submit`'s rows are. A `load`'s exception is the request's (it fails alone)."""
        loop = self._admit(len(loads), deadline)
        items = [self._enqueue(loop, None, outputs, deadline, load=load) for load in loads]
        return await (self._answer(items[0]) if len(items) == 1 else self._gather(items))

    async def _gather(self, items: list[Item]) -> dict[str, np.ndarray]:
        """The items' answers joined in order; the first failure abandons the rest."""

        def give_up(future: asyncio.Future) -> None:  # before gather hears of the failure
            if future.cancelled() or future.exception() is not None:
                for item in items:
                    self._abandon(item)

        for item in items:
            item.future.add_done_callback(give_up)
        try:
            return join(await asyncio.gather(*(item.future for item in items)))
        except BaseException:  # cancelled, or one chunk failed: the others never run
            for item in items:
                self._abandon(item)
            raise

    def _admit(self, rows: int, deadline: float) -> asyncio.AbstractEventLoop:
        """The loop, once `rows` more rows may queue (QueueFull, DeadlineExceeded)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if rows == 0:
            raise ValueError("empty batch")
        if self.queued_rows and self.queued_rows + rows > self.max_queue:
            raise QueueFull(f"{self.queued_rows} images are queued; the limit is {self.max_queue}")
        if deadline <= time.monotonic():
            raise DeadlineExceeded("the request's deadline passed before inference")
        return loop

    async def _answer(self, item: Item) -> dict[str, np.ndarray]:
        try:
            return await item.future
        except asyncio.CancelledError:  # the caller was cancelled (e.g. its client left)
            self._abandon(item)
            raise

    def _enqueue(
        self,
        loop: asyncio.AbstractEventLoop,
        array: np.ndarray | None,
        outputs: Sequence[str],
        deadline: float,
        *,
        load: Callable[[], np.ndarray] | None = None,
    ) -> Item:
        item = Item(array, outputs, loop.create_future(), time.monotonic(), load=load)
        if self._tracer is not None:
            item.span = tracing.current_span()
        item.timer = loop.call_at(loop.time() + (deadline - item.enqueued), self._expire, item)
        self._pending.append(item)
        self._queued(item.rows)
        self._maybe_dispatch()
        return item

    def _abandon(self, item: Item) -> None:
        """Nobody waits for `item` any more: still queued, it frees its place now and is
        skipped at dispatch; already in a running batch, its rows' answer is dropped."""
        if not item.future.done():
            item.future.cancel()
        if item.timer is not None:
            item.timer.cancel()
        if item.pending:
            item.pending = False
            self._queued(-item.rows)

    def _expire(self, item: Item) -> None:
        if item.future.done():
            return
        if item.pending:  # still queued: free its place now, skip it at dispatch
            item.pending = False
            self._queued(-item.rows)
        item.future.set_exception(
            DeadlineExceeded("the request's deadline passed while waiting for inference")
        )

    def _queued(self, rows: int) -> None:
        self.queued_rows += rows
        self._observer.on_queue_depth(self.queued_rows)

    # ---- dispatch -------------------------------------------------------
    @property
    def _full(self) -> bool:
        return self._running >= self.max_concurrent

    def _maybe_dispatch(self) -> None:
        if self._full:
            return
        while self._pending and self._pending[0].future.done():
            self._drop_head()
        if not self._pending:
            return
        if self.incoming > 0 and self.queued_rows < self.max_batch_size and self.max_delay_s > 0:
            due = self._pending[0].enqueued + self.max_delay_s
            wait = due - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = self._loop.call_later(wait, self._on_timer)
                return
        self._dispatch()

    def _on_timer(self) -> None:
        self._timer = None
        self._maybe_dispatch()

    def _drop_head(self) -> None:
        item = self._pending.popleft()
        if item.pending:  # cancelled by its caller (e.g. client went away)
            item.pending = False
            self._queued(-item.rows)
        if item.timer is not None:
            item.timer.cancel()

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items: list[Item] = []
        rows = 0
        now = time.monotonic()
        while self._pending:
            item = self._pending[0]
            if item.future.done():
                self._drop_head()
                continue
            if items and rows + item.rows > self.max_batch_size:
                break
            self._pending.popleft()
            item.pending = False
            items.append(item)
            rows += item.rows
            self._observer.on_queue_wait(now - item.enqueued)
            if item.span is not None:
                self._tracer.queue_waited(item.span, item.rows, now - item.enqueued)
        if not items:
            return
        self._queued(-rows)
        outputs = list(dict.fromkeys(name for item in items for name in item.outputs))
        self._running += 1
        self._worker.submit(
            self._runner.execute, self._loop, items, outputs, self._pad_to, self._batch_done
        )

    def _batch_done(self) -> None:
        self._running -= 1
        self._maybe_dispatch()

    async def drain(self, poll_s: float = 0.01) -> None:
        """Wait until every queued and running batch has finished (shutdown only)."""
        while self._running or self._pending:
            self._maybe_dispatch()
            await asyncio.sleep(poll_s)
