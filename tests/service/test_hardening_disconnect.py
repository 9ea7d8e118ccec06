"""Work for a client that has gone stops (issue 10).

Raw sockets send a whole multi-image body and close, at once or while the
server decodes; a gRPC client cancels its call. The server must then stop the
request's work (no inference for it, decode CPU well under what the whole body
costs), count it as 499 without a traceback, and keep its bookkeeping right:
in-flight gauge and queue depth back to 0, the next request served. The
batcher's own part (queued rows of a cancelled request never run) is checked
in-process with a real inference thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import cache

import httpx
import numpy as np
import pytest

from service.batcher import Batcher, BatchFailed, BatchObserver
from service.bundle import read_bundle
from service.inference_thread import InferenceThread
from service.preprocess import preprocess
from tests.service.grpc_support import bytes_request, stub
from tests.service.hardening_support import connect, cpu_seconds, metric, multipart, slow_jpeg
from tests.service.serving import DIGITS, ServerProcess, digit_images, free_port

IMAGES = 16  # per body: one batch of 16 (max_batch_size 4: four batches)
BATCHES = "convserve_batch_size_count"
GRPC_ROUTE = "/inference.GRPCInferenceService/ModelInfer"
GRPC_PORT: list[int] = []


@cache
def slow_images() -> tuple[list[bytes], float]:
    """IMAGES distinct slow JPEGs (2048 px, 62 scans) and the CPU seconds decoding them
    all takes in this process."""
    blobs = [slow_jpeg(2048, seed) for seed in range(IMAGES)]
    bundle = read_bundle(DIGITS)
    start = time.process_time()
    for blob in blobs[:4]:
        preprocess(blob, bundle.input, bundle.preprocessing, max_pixels=1 << 22)
    return blobs, (time.process_time() - start) * IMAGES / 4


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    GRPC_PORT[:] = [free_port()]
    proc = ServerProcess(
        "--max-batch-size",
        "4",
        "--log-level",
        "info",
        env={"CONVSERVE_GRPC_PORT": str(GRPC_PORT[0])},
    )
    try:
        yield proc.start(timeout=60)
    finally:
        proc.terminate()
        try:
            proc.proc.wait(30)
        finally:
            proc.stop()


def _wait_for(what, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _idle(url: str) -> bool:
    """Nothing in flight but this scrape, nothing queued."""
    in_flight = metric(url, "convserve_requests_in_flight")
    return in_flight <= 1 and metric(url, "convserve_queue_depth") == 0


def _send_and_leave(url: str, body: bytes, content_type: str, linger_s: float) -> None:
    sock = connect(url)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    time.sleep(linger_s)
    sock.close()


def _counts(url: str) -> tuple[float, float, float]:
    """(499s, 5xx, batches) so far."""
    gone = metric(url, "convserve_requests_total", status="499")
    fives = sum(metric(url, "convserve_requests_total", status=f"50{d}") for d in range(5))
    return gone, fives, metric(url, BATCHES, model="digits")


@pytest.mark.parametrize("linger_s", [0.0, 0.3], ids=["at once", "while decoding"])
def test_a_client_that_leaves_after_its_body_stops_its_work(
    server: ServerProcess, linger_s: float
) -> None:
    """Before: the request decoded all its images and ran them through the model
    (four batches here) for nobody; the answer went nowhere."""
    blobs, full_cpu = slow_images()
    body, ctype = multipart(blobs)
    gone, fives, batches = _counts(server.url)
    cpu = cpu_seconds(server.proc.pid)
    _send_and_leave(server.url, body, ctype, linger_s)
    _wait_for(lambda: _counts(server.url)[0] >= gone + 1)
    time.sleep(full_cpu + 0.5)  # whatever was still to run has run by now
    cpu = cpu_seconds(server.proc.pid) - cpu
    now_gone, now_fives, now_batches = _counts(server.url)
    assert now_gone == gone + 1 and now_fives == fives
    assert now_batches == batches, "the model ran for a client that had gone"
    assert cpu < 0.6 * full_cpu, f"{cpu:.2f} s of CPU; decoding the whole body is {full_cpu:.2f}"
    _wait_for(lambda: _idle(server.url))
    assert "Traceback" not in server.output and "CancelledError" not in server.output
    assert " 499 " in server.output  # the access log line


def test_after_many_clients_leave_the_server_is_idle_and_serves(server: ServerProcess) -> None:
    blobs, _ = slow_images()
    body, ctype = multipart(blobs[:4])
    gone, fives, _ = _counts(server.url)
    leavers = [
        threading.Thread(target=_send_and_leave, args=(server.url, body, ctype, 0.05 * (i % 8)))
        for i in range(24)
    ]
    for thread in leavers:
        thread.start()
    for thread in leavers:
        thread.join(60)
    _wait_for(lambda: _counts(server.url)[0] >= gone + 24, timeout=60)
    _wait_for(lambda: _idle(server.url), timeout=30)
    now_gone, now_fives, _ = _counts(server.url)
    assert now_gone == gone + 24 and now_fives == fives
    label, small = digit_images()[0]
    r = httpx.post(
        server.url + "/predict", content=small, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(label), r.text
    assert "Traceback" not in server.output


def test_a_cancelled_grpc_call_stops_its_work(server: ServerProcess) -> None:
    blobs, full_cpu = slow_images()
    gone = metric(server.url, "convserve_requests_total", route=GRPC_ROUTE, status="499")
    batches = metric(server.url, BATCHES, model="digits")
    cpu = cpu_seconds(server.proc.pid)
    channel, client = stub(f"127.0.0.1:{GRPC_PORT[0]}")
    try:
        call = client.ModelInfer.future(bytes_request(blobs, raw=True))
        time.sleep(0.3)
        assert call.cancel()
    finally:
        channel.close()
    _wait_for(
        lambda: (
            metric(server.url, "convserve_requests_total", route=GRPC_ROUTE, status="499")
            >= gone + 1
        )
    )
    time.sleep(full_cpu + 0.5)
    cpu = cpu_seconds(server.proc.pid) - cpu
    assert metric(server.url, BATCHES, model="digits") == batches
    assert cpu < 0.6 * full_cpu, f"{cpu:.2f} s of CPU; decoding the whole call is {full_cpu:.2f}"
    _wait_for(lambda: _idle(server.url))
    assert "Traceback" not in server.output


def test_queued_rows_of_a_cancelled_request_never_run() -> None:
    """In-process: a request queued behind a running batch is cancelled; its rows leave
    the queue at once and never reach the model; a multi-chunk request whose first chunk
    fails gives up its chunks still queued."""
    ran: list[float] = []  # the first value of each batch the model saw
    depth: list[int] = []
    release = threading.Event()

    def run(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        release.wait(10)
        ran.append(float(batch[0, 0]))
        if batch[0, 0] < 0:
            raise RuntimeError("this batch fails")
        return {name: batch for name in outputs}

    async def scenario() -> None:
        worker = InferenceThread("test-cancel")
        observer = BatchObserver(on_queue_depth=depth.append)
        batcher = Batcher(run, worker, max_batch_size=2, max_delay_s=0, max_queue=64,
                          observer=observer)  # fmt: skip
        far = time.monotonic() + 30
        try:
            first = asyncio.ensure_future(batcher.submit(np.ones((1, 1)), ["y"], far))
            await asyncio.sleep(0.05)  # running, blocked in `run`
            queued = asyncio.ensure_future(batcher.submit(np.ones((2, 1)), ["y"], far))
            await asyncio.sleep(0.05)
            assert batcher.queued_rows == 2
            queued.cancel()
            await asyncio.sleep(0.01)
            assert batcher.queued_rows == 0 and depth[-1] == 0
            # six rows in three chunks of two (-1, 2, 3); the first chunk fails
            rows = np.array([[-1.0], [-1.0], [2.0], [2.0], [3.0], [3.0]])
            chunked = asyncio.ensure_future(batcher.submit(rows, ["y"], far))
            await asyncio.sleep(0.05)
            assert batcher.queued_rows == 6
            release.set()
            await asyncio.wait_for(first, 10)
            with pytest.raises(BatchFailed):
                await asyncio.wait_for(chunked, 10)
            await batcher.drain()
            assert 3.0 not in ran and ran[:2] == [1.0, -1.0], ran  # chunk 2 may have started
            assert batcher.queued_rows == 0 and batcher.idle()
        finally:
            release.set()
            worker.close()

    asyncio.run(scenario())
