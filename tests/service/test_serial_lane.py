"""The serial lane: a slow model's single upload queues encoded and is decoded by the
inference thread right before it runs (service/serial_lane.py).

The batcher's half runs with real threads and a numpy function as the model (it
knows no onnxruntime); the server's half with uvicorn, onnxruntime and a photo.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service import dataplane, serial_lane
from service.batcher import Batcher, BatchObserver, DeadlineExceeded, QueueFull
from service.execution import usable_cpus
from service.inference_thread import InferenceThread
from tests.service.serving import LiveServer, answer_probabilities, reference, settings

PHOTO = Path(__file__).resolve().parents[2] / "benchmarks/data/photo-640x480.jpg"


class Model:
    """Doubles its input; records the thread of each run, and each event in order."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.threads: list[str] = []

    def __call__(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        self.events.append(f"run {len(batch)}")
        return {name: batch * 2 for name in outputs}


def loader(value: float, events: list[str], threads: list[str]) -> Callable[[], np.ndarray]:
    """A deferred row (as Decoder.deferred makes one): records when and where it is made."""

    def load() -> np.ndarray:
        threads.append(threading.current_thread().name)
        events.append(f"load {value}")
        if np.isnan(value):
            raise ValueError("not an image")
        return np.full((1, 1), value, np.float32)

    return load


@pytest.fixture
def worker():
    thread = InferenceThread("test-serial")
    yield thread
    thread.close()


def batcher(worker: InferenceThread, events: list[str], **kw) -> tuple[Batcher, list, Model]:
    """A batcher over `Model`, with its queue depths and batch sizes observed."""
    depths: list = []
    model = Model(events)
    observer = BatchObserver(
        on_queue_depth=depths.append, on_batch=lambda rows, s: events.append(f"counted {rows}")
    )
    options = {"max_batch_size": 1, "max_delay_s": 0, "max_queue": 8, **kw}
    return Batcher(model, worker, observer=observer, **options), depths, model


def far() -> float:
    return time.monotonic() + 30


def test_a_deferred_row_is_made_by_the_inference_thread_right_before_it_runs(worker) -> None:
    events: list[str] = []
    load_threads: list[str] = []

    async def scenario() -> None:
        b, depths, model = batcher(worker, events)
        b.claim()  # the model is busy: the row queues, still encoded
        task = asyncio.ensure_future(
            b.submit_deferred(loader(3.0, events, load_threads), ["y"], far())
        )
        await asyncio.sleep(0.05)
        assert events == [] and b.queued_rows == 1 and depths == [1]  # counted while it queues
        b.release(0, 0.0)
        out = await asyncio.wait_for(task, 10)
        np.testing.assert_array_equal(out["y"], [[6.0]])
        assert load_threads == model.threads == ["test-serial"]
        assert depths == [1, 0] and b.queued_rows == 0

    asyncio.run(scenario())
    assert events == ["load 3.0", "run 1", "counted 1"]


def test_a_full_queue_refuses_deferred_rows_before_decoding_them(worker) -> None:
    events: list[str] = []

    async def scenario() -> None:
        b, _, _ = batcher(worker, events, max_queue=1)
        b.claim()
        first = asyncio.ensure_future(b.submit_deferred(loader(1.0, events, []), ["y"], far()))
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFull):
            await b.submit_deferred(loader(2.0, events, []), ["y"], far())
        b.release(0, 0.0)
        await asyncio.wait_for(first, 10)

    asyncio.run(scenario())
    assert events == ["load 1.0", "run 1", "counted 1"]  # the refused row was never decoded


def test_a_row_whose_request_expired_or_left_while_queued_is_never_decoded(worker) -> None:
    events: list[str] = []

    async def scenario() -> None:
        b, depths, _ = batcher(worker, events)
        b.claim()
        soon = time.monotonic() + 0.05
        expiring = asyncio.ensure_future(b.submit_deferred(loader(1.0, events, []), ["y"], soon))
        leaving = asyncio.ensure_future(b.submit_deferred(loader(2.0, events, []), ["y"], far()))
        await asyncio.sleep(0.01)
        leaving.cancel()  # its client went away
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(expiring, 10)
        assert b.queued_rows == 0 and depths[-1] == 0  # both freed their places at once
        b.release(0, 0.0)
        await asyncio.sleep(0.1)
        assert b.idle()

    asyncio.run(scenario())
    assert events == []


def test_a_failing_decode_fails_only_its_own_request(worker) -> None:
    events: list[str] = []

    async def scenario() -> list:
        b, _, _ = batcher(worker, events, max_batch_size=4)
        b.claim()  # all three queue, then run as one batch
        jobs = [
            b.submit(np.full((1, 1), 5.0, np.float32), ["y"], far()),
            b.submit_deferred(loader(float("nan"), events, []), ["y"], far()),
            b.submit_deferred(loader(7.0, events, []), ["y"], far()),
        ]
        tasks = [asyncio.ensure_future(job) for job in jobs]
        await asyncio.sleep(0.02)
        b.release(0, 0.0)
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    plain, failed, deferred = asyncio.run(scenario())
    np.testing.assert_array_equal(plain["y"], [[10.0]])
    np.testing.assert_array_equal(deferred["y"], [[14.0]])
    assert isinstance(failed, ValueError) and str(failed) == "not an image"  # its own error
    assert events == ["load nan", "load 7.0", "run 2", "counted 2"]


def _photo_through(cfg, monkeypatch) -> tuple[list, int, int]:
    """A photo, a non-image and a two-photo multipart posted to digits made to look slow
    (the serial lane's threshold at 0), with the lone-upload path declining: the answers,
    decode-pool threads started, and the served model's execution."""

    async def declines(*args, **kw) -> None:
        return None

    monkeypatch.setattr(serial_lane, "SLOW_MODEL_MS", 0.0)
    monkeypatch.setattr(dataplane, "run_alone", declines)
    photo = PHOTO.read_bytes()
    with LiveServer(cfg) as live, live.client() as c:
        dp = live.app.state.dataplane
        jpeg = {"Content-Type": "image/jpeg"}
        answers = [
            c.post("/predict?top_k=10", content=photo, headers=jpeg),
            c.post("/predict", content=b"\xff\xd8" + b"\0" * 20000, headers=jpeg),
        ]
        single_pool = len(dp.decoder.pool._threads)
        files = [("file", ("a.jpg", photo, "image/jpeg")), ("file", ("b.jpg", photo, "image/jpeg"))]
        answers.append(c.post("/predict", files=files))
        queued = dp.model("digits").batcher.queued_rows
    assert queued == 0
    expected = reference([photo])["probabilities"]
    assert answers[0].status_code == 200, answers[0].text
    np.testing.assert_allclose(answer_probabilities(answers[0].json()), expected, atol=1e-6)
    assert answers[1].status_code == 400 and answers[1].json()["error"]["code"] == "invalid_image"
    assert answers[2].status_code == 200, answers[2].text
    return answers, single_pool, len(dp.decoder.pool._threads)


def test_a_one_cpu_worker_decodes_a_slow_models_upload_on_its_inference_thread(
    monkeypatch,
) -> None:
    _, single_pool, pool = _photo_through(settings(workers=usable_cpus()), monkeypatch)
    assert single_pool == 0  # both single uploads decoded by the inference thread
    assert pool > 0  # several images in one request still decode in the pool


def test_a_worker_with_cpus_to_spare_decodes_in_its_pool(monkeypatch) -> None:
    if usable_cpus() == 1:
        pytest.skip("one CPU: every worker has one CPU's share")
    _, single_pool, _ = _photo_through(settings(workers=1), monkeypatch)
    assert single_pool > 0  # the pool decodes beside the run: there is a CPU for it


def test_a_row_whose_deadline_passes_while_its_batch_decodes_is_never_decoded(worker) -> None:
    events: list[str] = []

    def slow() -> np.ndarray:
        time.sleep(0.2)  # the first row of the batch takes long to decode
        events.append("load slow")
        return np.ones((1, 1), np.float32)

    async def scenario() -> tuple:
        b, _, _ = batcher(worker, events, max_batch_size=2)
        b.claim()
        first = asyncio.ensure_future(b.submit_deferred(slow, ["y"], far()))
        soon = time.monotonic() + 0.1
        second = asyncio.ensure_future(b.submit_deferred(loader(2.0, events, []), ["y"], soon))
        await asyncio.sleep(0.02)
        b.release(0, 0.0)  # both go to the inference thread as one batch
        return await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)

    first, second = asyncio.run(scenario())
    np.testing.assert_array_equal(first["y"], [[2.0]])
    assert isinstance(second, DeadlineExceeded)
    assert events == ["load slow", "run 1", "counted 1"]
