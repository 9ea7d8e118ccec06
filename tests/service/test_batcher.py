"""The dynamic batcher on its own: real threads and asyncio, a plain function as the model.

The batcher knows nothing of onnxruntime, so a deterministic numpy function
(with an optional gate to hold the inference thread busy) exercises every rule.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import numpy as np
import pytest

from service.batcher import (
    Batcher,
    BatchFailed,
    BatchObserver,
    DeadlineExceeded,
    QueueFull,
)
from service.inference_thread import InferenceThread


class Model:
    """doubles its input; records batch sizes and the thread it ran on; can be held busy."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        self.sizes.append(len(batch))
        self.threads.add(threading.current_thread().name)
        if np.isnan(batch).any():
            raise ValueError("NaN in batch")
        return {name: batch * 2 for name in outputs}


def rows(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def far() -> float:
    return time.monotonic() + 30


@pytest.fixture
def worker():
    thread = InferenceThread("test-inference")
    yield thread
    thread.close()


def make(model: Model, worker: InferenceThread, **kw: float) -> Batcher:
    opts = {"max_batch_size": 4, "max_delay_s": 0.0, "max_queue": 100, **kw}
    return Batcher(model, worker, **opts)


async def _hold_busy(batcher: Batcher, model: Model) -> asyncio.Task:
    """Occupy the inference thread with one request; returns its task."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.ensure_future(batcher.submit(rows(100), ["y"], far()))
    await asyncio.to_thread(model.entered.wait, 5)
    return task


def test_runs_in_the_inference_thread_and_returns_own_rows(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        out = await make(model, worker).submit(rows(1, 2, 3), ["y"], far())
        np.testing.assert_array_equal(out["y"], rows(2, 4, 6))

    asyncio.run(main())
    assert model.threads == {"test-inference"}


def test_queued_requests_are_batched_in_order_and_split_back(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker)
        first = await _hold_busy(batcher, model)
        tasks = [
            asyncio.ensure_future(batcher.submit(rows(i, i + 0.5), ["y"], far())) for i in range(3)
        ]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 6
        model.gate.set()
        results = await asyncio.gather(first, *tasks)
        for i, out in enumerate(results[1:]):
            np.testing.assert_array_equal(out["y"], rows(2 * i, 2 * i + 1))

    asyncio.run(main())
    # 1 (the blocker), then 2+2 rows packed into one batch of 4, then the last 2
    assert model.sizes == [1, 4, 2]


def test_request_larger_than_max_batch_is_split_in_order(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        data = rows(*range(10))
        out = await make(model, worker, max_batch_size=4).submit(data, ["y"], far())
        np.testing.assert_array_equal(out["y"], data * 2)

    asyncio.run(main())
    assert sorted(model.sizes) == [2, 4, 4]


def test_a_failing_batch_fails_only_its_own_requests(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker, max_batch_size=2)
        first = await _hold_busy(batcher, model)
        bad = asyncio.ensure_future(batcher.submit(rows(np.nan, 1), ["y"], far()))
        good = asyncio.ensure_future(batcher.submit(rows(3, 4), ["y"], far()))
        model.gate.set()
        await first
        with pytest.raises(BatchFailed, match="NaN in batch"):
            await bad
        np.testing.assert_array_equal((await good)["y"], rows(6, 8))

    asyncio.run(main())


def test_queue_full_is_refused_at_once(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker, max_queue=3)
        first = await _hold_busy(batcher, model)
        queued = asyncio.ensure_future(batcher.submit(rows(1, 2), ["y"], far()))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(rows(3, 4), ["y"], far())
        model.gate.set()
        await asyncio.gather(first, queued)
        assert batcher.queued_rows == 0

    asyncio.run(main())


def test_deadline_passing_in_the_queue_fails_that_request_only(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker)
        first = await _hold_busy(batcher, model)
        late = asyncio.ensure_future(batcher.submit(rows(1), ["y"], time.monotonic() + 0.05))
        patient = asyncio.ensure_future(batcher.submit(rows(2), ["y"], far()))
        with pytest.raises(DeadlineExceeded):
            await late
        assert batcher.queued_rows == 1  # the expired row gave its place back
        model.gate.set()
        await first
        np.testing.assert_array_equal((await patient)["y"], rows(4))
        with pytest.raises(DeadlineExceeded):  # already past: refused before queueing
            await batcher.submit(rows(1), ["y"], time.monotonic() - 1)

    asyncio.run(main())
    assert model.sizes == [1, 1]  # the expired row never ran


def test_no_wait_when_nothing_else_is_coming(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        # a 60 s gather window would stall this test if the batcher waited with nothing coming
        batcher = make(model, worker, max_delay_s=60.0)
        out = await asyncio.wait_for(batcher.submit(rows(1), ["y"], far()), 10)
        np.testing.assert_array_equal(out["y"], rows(2))

    asyncio.run(main())


def test_waits_for_announced_requests_up_to_the_batch_size(worker: InferenceThread) -> None:
    model = Model()
    seen: list[tuple[int, float]] = []

    async def main() -> None:
        observer = BatchObserver(on_batch=lambda n, s: seen.append((n, s)))
        batcher = Batcher(
            model, worker, max_batch_size=3, max_delay_s=60.0, max_queue=10, observer=observer
        )
        for _ in range(3):
            batcher.announce()  # three requests are decoding
        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(batcher.submit(rows(i), ["y"], far())))
            batcher.withdraw()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)  # full batch: no 60 s wait

    asyncio.run(main())
    assert model.sizes == [3]
    assert [n for n, _ in seen] == [3]


def test_gives_up_waiting_after_max_delay(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker, max_delay_s=0.05)
        batcher.announce()  # announced but never arrives
        out = await asyncio.wait_for(batcher.submit(rows(1), ["y"], far()), 10)
        np.testing.assert_array_equal(out["y"], rows(2))

    asyncio.run(main())
    assert model.sizes == [1]


def test_rows_that_cannot_be_stacked_fail_without_stalling(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker)
        first = await _hold_busy(batcher, model)
        narrow = asyncio.ensure_future(batcher.submit(rows(1), ["y"], far()))
        wide = asyncio.ensure_future(batcher.submit(np.ones((1, 3), np.float32), ["y"], far()))
        model.gate.set()
        await first
        for task in (narrow, wide):
            with pytest.raises(BatchFailed):
                await task
        np.testing.assert_array_equal((await batcher.submit(rows(5), ["y"], far()))["y"], rows(10))

    asyncio.run(main())


def test_two_batches_run_at_once_with_two_inference_threads() -> None:
    """max_concurrent=2 on a 2-thread worker: both batches are inside `run` together."""
    both_inside = threading.Barrier(2, timeout=5)  # breaks (fails the batch) if serialised

    def run(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        both_inside.wait()
        return {name: batch * 2 for name in outputs}

    async def main(pool: InferenceThread) -> list[dict[str, np.ndarray]]:
        batcher = Batcher(run, pool, max_batch_size=1, max_delay_s=0, max_queue=8, max_concurrent=2)
        return await asyncio.gather(
            batcher.submit(rows(1.0), ["y"], far()), batcher.submit(rows(2.0), ["y"], far())
        )

    pool = InferenceThread("test-inference", count=2)
    try:
        first, second = asyncio.run(main(pool))
    finally:
        pool.close()
    np.testing.assert_array_equal(first["y"], rows(2.0))
    np.testing.assert_array_equal(second["y"], rows(4.0))


def test_one_batch_at_a_time_by_default(worker: InferenceThread) -> None:
    """The default really serialises: two batches never meet inside `run`."""
    both_inside = threading.Barrier(2, timeout=0.3)

    def run(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        both_inside.wait()
        return {name: batch for name in outputs}

    async def main() -> list:
        batcher = Batcher(run, worker, max_batch_size=1, max_delay_s=0, max_queue=8)
        return await asyncio.gather(
            batcher.submit(rows(1.0), ["y"], far()),
            batcher.submit(rows(2.0), ["y"], far()),
            return_exceptions=True,
        )

    assert all(isinstance(r, BatchFailed) for r in asyncio.run(main()))


def test_queue_depth_is_reported_on_every_change(worker: InferenceThread) -> None:
    model = Model()
    depths: list[int] = []

    async def main() -> None:
        observer = BatchObserver(on_queue_depth=depths.append)
        batcher = Batcher(
            model, worker, max_batch_size=4, max_delay_s=0.0, max_queue=10, observer=observer
        )
        busy = await _hold_busy(batcher, model)  # queued 1, dispatched at once: 1, 0
        waiting = [
            asyncio.ensure_future(batcher.submit(rows(1, 2), ["y"], far())),
            asyncio.ensure_future(batcher.submit(rows(3), ["y"], far())),
        ]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 3
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, *waiting), 10)

    asyncio.run(main())
    assert depths == [1, 0, 2, 3, 0]


def test_pad_to_adds_zero_rows_that_no_request_sees(worker: InferenceThread) -> None:
    model = Model()
    batches: list[np.ndarray] = []
    padded: list[int] = []
    sizes: list[int] = []

    def run(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        batches.append(batch.copy())
        return model(batch, outputs)

    async def main() -> list[dict[str, np.ndarray]]:
        observer = BatchObserver(on_batch=lambda n, s: sizes.append(n), on_padding=padded.append)
        batcher = Batcher(
            run, worker, max_batch_size=8, max_delay_s=0.0, max_queue=100,
            observer=observer, pad_to=lambda n: 1 << (n - 1).bit_length(),
        )  # fmt: skip
        busy = await _hold_busy(batcher, model)  # 1 row: a power of two already
        waiting = [
            asyncio.ensure_future(batcher.submit(rows(1, 2), ["y"], far())),
            asyncio.ensure_future(batcher.submit(rows(3, 4, 5), ["y"], far())),
        ]
        await asyncio.sleep(0.01)
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(busy, *waiting), 10)

    outs = asyncio.run(main())
    assert model.sizes == [1, 8]  # 2 + 3 queued rows ran as one batch of 8
    np.testing.assert_array_equal(batches[1], rows(1, 2, 3, 4, 5, 0, 0, 0))
    np.testing.assert_array_equal(outs[1]["y"], rows(2, 4))
    np.testing.assert_array_equal(outs[2]["y"], rows(6, 8, 10))
    assert sizes == [1, 5] and padded == [3]  # real rows counted; padding separately


def test_rows_of_different_shapes_fail_their_batch_only(worker: InferenceThread) -> None:
    model = Model()

    async def main() -> None:
        batcher = make(model, worker)
        busy = await _hold_busy(batcher, model)
        odd = asyncio.ensure_future(batcher.submit(rows(1), ["y"], far()))
        wide = asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32), ["y"], far()))
        await asyncio.sleep(0.01)
        model.gate.set()
        await busy
        for task in (odd, wide):
            with pytest.raises(BatchFailed, match="ValueError"):
                await asyncio.wait_for(task, 10)
        assert batcher._running == 0  # the failed batch gave its slot back
        out = await asyncio.wait_for(batcher.submit(rows(7), ["y"], far()), 10)
        np.testing.assert_array_equal(out["y"], rows(14))

    asyncio.run(main())


def test_a_batcher_that_ran_is_freed_by_reference_counting(worker: InferenceThread) -> None:
    """An unloaded model's session is freed when the last reference goes (the lifecycle
    watches a weak reference): the scheduler and its runner must not form a cycle that
    only the cyclic collector would break."""
    model = Model()

    async def main() -> weakref.ref:
        batcher = make(model, worker)
        await batcher.submit(rows(1.0), ["probabilities"], far())
        return weakref.ref(batcher)

    gc.disable()
    try:
        gone = asyncio.run(main())
        # the answer reaches the loop before the inference thread drops the finished job
        # (whose arguments hold the batcher): wait until the thread has taken the next one
        idle = threading.Event()
        worker.submit(idle.set)
        assert idle.wait(10)
        assert gone() is None
    finally:
        gc.enable()
