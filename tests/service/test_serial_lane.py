"""The serial lane: a slow model's uploads queue encoded and are decoded by the
inference thread right before they run (service/serial_lane.py).

The batcher's half runs with real threads and a numpy function as the model (it
knows no onnxruntime); the server's half with uvicorn, onnxruntime and a photo.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        self.dispatched = 0  # rows the batcher handed to the inference thread

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

    def dispatched(seconds: float) -> None:
        model.dispatched += 1

    observer = BatchObserver(
        on_queue_depth=depths.append,
        on_batch=lambda rows, s: events.append(f"counted {rows}"),
        on_queue_wait=dispatched,
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
            b.submit_deferred([loader(3.0, events, load_threads)], ["y"], far())
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
        first = asyncio.ensure_future(b.submit_deferred([loader(1.0, events, [])], ["y"], far()))
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFull):
            await b.submit_deferred([loader(2.0, events, [])], ["y"], far())
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
        expiring = asyncio.ensure_future(b.submit_deferred([loader(1.0, events, [])], ["y"], soon))
        leaving = asyncio.ensure_future(b.submit_deferred([loader(2.0, events, [])], ["y"], far()))
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
            b.submit_deferred([loader(float("nan"), events, [])], ["y"], far()),
            b.submit_deferred([loader(7.0, events, [])], ["y"], far()),
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


def test_a_requests_images_are_rows_of_their_own_answered_in_order(worker) -> None:
    events: list[str] = []

    async def scenario() -> tuple:
        b, _, model = batcher(worker, events)
        b.claim()
        loads = [loader(v, events, []) for v in (1.0, 2.0, 3.0)]
        whole = asyncio.ensure_future(b.submit_deferred(loads, ["y"], far()))
        loads = [loader(v, events, []) for v in (4.0, float("nan"), 6.0)]
        failing = asyncio.ensure_future(b.submit_deferred(loads, ["y"], far()))
        await asyncio.sleep(0.02)
        queued = b.queued_rows
        b.release(0, 0.0)
        got = await asyncio.wait_for(asyncio.gather(whole, failing, return_exceptions=True), 10)
        return *got, queued, b.queued_rows, model.dispatched

    whole, failing, queued, left, dispatched = asyncio.run(scenario())
    np.testing.assert_array_equal(whole["y"], [[2.0], [4.0], [6.0]])
    assert isinstance(failing, ValueError)
    assert (queued, left) == (6, 0)
    # batches of one: the failing request's last image was dropped before it was dispatched
    assert dispatched == 5 and events[-2:] == ["counted 1", "load nan"]


def _served(cfg, monkeypatch, busy_rows: int) -> dict:
    """Requests to digits made to look slow (the serial lane's threshold at 0), with the
    lone-upload path declining: a photo and a non-image alone; two photos, and a photo
    with a non-image, while the model is held busy; two photos again once it is idle.
    The answers, decode-pool threads started, and rows queued while it was busy (once
    `busy_rows` have, or after 10 s)."""

    async def declines(*args, **kw) -> None:
        return None

    monkeypatch.setattr(serial_lane, "SLOW_MODEL_MS", 0.0)
    monkeypatch.setattr(dataplane, "run_alone", declines)
    photo = PHOTO.read_bytes()
    jpeg = {"Content-Type": "image/jpeg"}
    two = [("file", ("a.jpg", photo, "image/jpeg")), ("file", ("b.jpg", photo, "image/jpeg"))]
    bad = [
        ("file", ("a.jpg", photo, "image/jpeg")),
        ("file", ("junk.jpg", b"\xff\xd8" + b"\0" * 20000, "image/jpeg")),
    ]
    got: dict = {}
    with LiveServer(cfg) as live, live.client() as c:
        dp = live.app.state.dataplane
        b = dp.model("digits").batcher
        got["photo"] = c.post("/predict?top_k=10", content=photo, headers=jpeg)
        got["junk"] = c.post("/predict", content=b"\xff\xd8" + b"\0" * 20000, headers=jpeg)
        got["single_pool"] = len(dp.decoder.pool._threads)
        loop = b._loop
        assert loop is not None  # set when the photo queued
        loop.call_soon_threadsafe(b.claim)  # the model is busy from now on
        with ThreadPoolExecutor(2) as clients:
            busy = [clients.submit(c.post, "/predict", files=files) for files in (two, bad)]
            until = time.monotonic() + 10
            while b.queued_rows < busy_rows and time.monotonic() < until:
                time.sleep(0.01)
            got["queued_while_busy"] = b.queued_rows
            got["busy_pool"] = len(dp.decoder.pool._threads)
            loop.call_soon_threadsafe(b.release, 0, 0.0)
            got["busy_two"], got["busy_bad"] = (f.result(30) for f in busy)
        got["idle_two"] = c.post("/predict", files=two)
        got["pool"] = len(dp.decoder.pool._threads)
        got["queued_at_end"] = b.queued_rows
    expected = reference([photo])["probabilities"]
    for key in ("photo", "busy_two", "idle_two"):
        assert got[key].status_code == 200, got[key].text
    np.testing.assert_allclose(answer_probabilities(got["photo"].json()), expected, atol=1e-6)
    for key in ("busy_two", "idle_two"):
        for prediction in got[key].json()["predictions"]:
            top = {p["label"]: p["probability"] for p in prediction["top_k"]}
            assert top[prediction["label"]] == pytest.approx(float(expected.max()), abs=1e-6)
    assert got["junk"].status_code == 400 and got["junk"].json()["error"]["code"] == "invalid_image"
    assert got["busy_bad"].status_code == 400, got["busy_bad"].text
    assert got["busy_bad"].json()["error"]["message"].startswith("image 1 (junk.jpg): ")
    assert got["queued_at_end"] == 0
    return got


def test_a_one_cpu_worker_decodes_a_slow_models_uploads_on_its_inference_thread(
    monkeypatch,
) -> None:
    got = _served(settings(workers=usable_cpus()), monkeypatch, busy_rows=4)
    assert got["single_pool"] == 0  # both single uploads decoded by the inference thread
    assert got["queued_while_busy"] == 4  # the busy model's images queued, still encoded
    assert got["busy_pool"] == 0
    assert got["pool"] > 0  # several images for an idle model decode in the pool, at once


def test_a_worker_with_cpus_to_spare_decodes_in_its_pool(monkeypatch) -> None:
    if usable_cpus() == 1:
        pytest.skip("one CPU: every worker has one CPU's share")
    got = _served(settings(workers=1), monkeypatch, busy_rows=2)
    assert got["single_pool"] > 0  # the pool decodes beside the run: there is a CPU for it
    assert got["queued_while_busy"] == 2  # decoded first; the junk failed before it queued


def test_a_row_whose_deadline_passes_while_its_batch_decodes_is_never_decoded(worker) -> None:
    events: list[str] = []

    def slow() -> np.ndarray:
        time.sleep(0.2)  # the first row of the batch takes long to decode
        events.append("load slow")
        return np.ones((1, 1), np.float32)

    async def scenario() -> tuple:
        b, _, _ = batcher(worker, events, max_batch_size=2)
        b.claim()
        first = asyncio.ensure_future(b.submit_deferred([slow], ["y"], far()))
        soon = time.monotonic() + 0.1
        second = asyncio.ensure_future(b.submit_deferred([loader(2.0, events, [])], ["y"], soon))
        await asyncio.sleep(0.02)
        b.release(0, 0.0)  # both go to the inference thread as one batch
        return await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)

    first, second = asyncio.run(scenario())
    np.testing.assert_array_equal(first["y"], [[2.0]])
    assert isinstance(second, DeadlineExceeded)
    assert events == ["load slow", "run 1", "counted 1"]
