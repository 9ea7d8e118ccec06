"""A lone upload (nothing else of its model in flight) is decoded and run in one pool job.

Same answers and errors as the batched path; the batcher counts the run and
queues whatever arrives meanwhile behind it.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from service import lone_upload, peer_workers
from service.batcher import Batcher, BatchObserver
from service.execution import SoloOrBusy, usable_cpus
from service.inference_thread import InferenceThread
from tests.service.serving import (
    LiveServer,
    answer_probabilities,
    digit_images,
    reference,
    settings,
)


def large_png(data: bytes) -> bytes:
    """The digit at 256x256 with 1-level noise: a PNG over 16 KiB, so not decoded inline."""
    image = Image.open(io.BytesIO(data)).resize((256, 256), Image.Resampling.NEAREST)
    noise = np.random.default_rng(0).integers(0, 2, (256, 256), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image) ^ noise).save(buf, format="PNG")
    return buf.getvalue()


def test_a_lone_large_upload_gets_the_same_answer_as_onnxruntime() -> None:
    _, small = digit_images()[0]
    png = large_png(small)
    assert len(png) > 16 * 1024
    with LiveServer() as live, live.client() as c:
        answer = c.post("/predict?top_k=10", content=png, headers={"Content-Type": "image/png"})
        junk = c.post("/predict", content=b"\0" * 20000, headers={"Content-Type": "image/png"})
        metrics = c.get("/metrics").text
    batches = re.search(r'convserve_batch_size_count\{[^}]*model="digits"[^}]*\} (\S+)', metrics)
    assert answer.status_code == 200, answer.text
    expected = reference([png])["probabilities"]
    np.testing.assert_allclose(answer_probabilities(answer.json()), expected, atol=1e-6)
    assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_image"
    assert batches is not None and float(batches.group(1)) >= 1  # the lone run counts as a batch


def test_runs_queued_during_a_claim_wait_for_its_release() -> None:
    sizes: list[int] = []
    counted: list[int] = []

    def run(batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        sizes.append(len(batch))
        return {name: batch * 2 for name in outputs}

    async def scenario() -> None:
        worker = InferenceThread("test-alone")
        observer = BatchObserver(on_batch=lambda rows, seconds: counted.append(rows))
        batcher = Batcher(run, worker, max_batch_size=4, max_delay_s=0, max_queue=10,
                          observer=observer)  # fmt: skip
        try:
            assert batcher.idle()
            batcher.claim()
            assert not batcher.idle()
            waiting = asyncio.ensure_future(
                batcher.submit(np.ones((2, 1), np.float32), ["y"], time.monotonic() + 30)
            )
            await asyncio.sleep(0.05)
            assert not waiting.done() and sizes == []  # queued behind the claimed run
            batcher.release(1, 0.001)
            out = await asyncio.wait_for(waiting, 10)
            assert out["y"].tolist() == [[2.0], [2.0]] and sizes == [2]
            assert counted == [1, 2] and batcher.idle()
        finally:
            worker.close()

    asyncio.run(scenario())


def test_a_lone_upload_that_expires_while_decoding_never_reaches_the_model() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (1500, 1500), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # slow to decode
    with LiveServer(settings(request_timeout_s=0.005)) as live, live.client() as c:
        answer = c.post("/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
        metrics = c.get("/metrics").text
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "timeout"
    assert not re.search(r'convserve_batch_size_count\{[^}]*model="digits"[^}]*\} [1-9]', metrics)


def test_alone_in_the_process_a_fast_model_runs_on_the_event_loop() -> None:
    photo = (Path(__file__).resolve().parents[2] / "benchmarks/data/photo-640x480.jpg").read_bytes()
    with LiveServer() as live, live.client() as c:  # digits: tuned far under 1 ms
        dp = live.app.state.dataplane
        answer = c.post("/predict", content=photo, headers={"Content-Type": "image/jpeg"})
        pool_threads = len(dp.decoder.pool._threads)
    assert answer.status_code == 200, answer.text
    assert pool_threads == 0  # decoded and run on the loop: the decode pool never started
    expected = reference([photo])["probabilities"]
    got = np.array([[p["probability"] for p in answer.json()["predictions"][0]["top_k"]]])
    np.testing.assert_allclose(np.sort(got)[:, ::-1], np.sort(expected)[:, ::-1][:, :5], atol=1e-6)


def _upload_beside_a_stalled_request(cfg) -> tuple[httpx.Response, int]:
    """A photo posted while another request is in flight (its body stalled halfway):
    the answer, and how many decode-pool threads the server started."""
    photo = (Path(__file__).resolve().parents[2] / "benchmarks/data/photo-640x480.jpg").read_bytes()
    with LiveServer(cfg) as live, live.client() as c:
        dp = live.app.state.dataplane
        with socket.create_connection(("127.0.0.1", live.port)) as stalled:
            stalled.sendall(
                b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 1000\r\n\r\n" + photo[:10]
            )
            deadline = time.monotonic() + 10
            while dp.state.in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert dp.state.in_flight == 1
            answer = c.post(
                "/predict?top_k=10", content=photo, headers={"Content-Type": "image/jpeg"}
            )
            pool_threads = len(dp.decoder.pool._threads)
    expected = reference([photo])["probabilities"]
    got = answer_probabilities(answer.json())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    return answer, pool_threads


def test_a_worker_with_one_cpu_serves_a_fast_models_uploads_on_its_loop_under_load() -> None:
    """One worker per CPU (the default): a pool thread would only compete with the loop
    for that CPU, so an upload is decoded on the loop even beside another request."""
    answer, pool_threads = _upload_beside_a_stalled_request(settings(workers=usable_cpus()))
    assert answer.status_code == 200 and pool_threads == 0


def test_a_worker_with_cpus_to_spare_decodes_beside_other_requests_in_its_pool() -> None:
    answer, pool_threads = _upload_beside_a_stalled_request(settings(workers=1))
    if usable_cpus() == 1:
        assert pool_threads == 0  # a one-CPU machine: this worker has one CPU too
    else:
        assert answer.status_code == 200 and pool_threads > 0


class CountingSession:
    """A real onnxruntime session that counts its runs (the solo session of the pair)."""

    def __init__(self, session) -> None:
        self.session, self.runs = session, 0

    def run(self, *args):
        self.runs += 1
        return self.session.run(*args)


def _lone_photo_for_a_slow_model_with_a_solo_session(monkeypatch, *, peers_idle: bool):
    """A photo posted alone to digits made to look slow (over ALONE_MODEL_MS) and given a
    solo session, as the tuner gives heavy models: the answer, decode-pool threads
    started, and runs of the solo session."""
    monkeypatch.setattr(lone_upload, "ALONE_MODEL_MS", 0.0)
    monkeypatch.setattr(peer_workers, "others_idle", lambda: peers_idle)
    photo = (Path(__file__).resolve().parents[2] / "benchmarks/data/photo-640x480.jpg").read_bytes()
    with LiveServer() as live, live.client() as c:
        dp = live.app.state.dataplane
        engine = dp.model("digits").engine
        solo = CountingSession(engine._create(engine.options, ["CPUExecutionProvider"]))
        engine.session = SoloOrBusy(engine.session, solo)
        answer = c.post("/predict?top_k=10", content=photo, headers={"Content-Type": "image/jpeg"})
        pool_threads = len(dp.decoder.pool._threads)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        answer_probabilities(answer.json()), reference([photo])["probabilities"], atol=1e-6
    )
    return pool_threads, solo.runs


def test_a_slow_models_lone_upload_runs_on_the_loop_when_it_has_the_machine(monkeypatch) -> None:
    """Its run takes every CPU anyway: the two thread hops would only add wake-ups
    (heavy224, c=1: p50 11.68 -> 11.07 ms)."""
    pool_threads, solo_runs = _lone_photo_for_a_slow_model_with_a_solo_session(
        monkeypatch, peers_idle=True
    )
    assert (pool_threads, solo_runs) == (0, 1)


def test_a_slow_models_lone_upload_hops_to_the_pool_while_another_worker_is_busy(
    monkeypatch,
) -> None:
    pool_threads, solo_runs = _lone_photo_for_a_slow_model_with_a_solo_session(
        monkeypatch, peers_idle=False
    )
    assert pool_threads > 0 and solo_runs == 0
