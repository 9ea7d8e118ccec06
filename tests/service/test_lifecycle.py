"""The server as a process: CLI, start-up refusals, no TensorFlow, graceful SIGTERM under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import onnxruntime as ort
import pytest

from tests.service.drain_support import held_upload, in_flight
from tests.service.hardening_support import slow_jpeg
from tests.service.serving import ROOT, ServerProcess, distinct_label_images


def test_importing_the_app_loads_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import service.__main__\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "heavy = ('tensorflow', 'keras', 'tf2onnx')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(bad)\n"
        "assert 'onnxruntime' in sys.modules and 'fastapi' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_lists_flags_mirroring_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for flag in (
        "--model-dir",
        "--providers",
        "--max-batch-size",
        "--api-key",
        "--drain-timeout-s",
    ):
        assert flag in result.stdout


def test_provider_cuda_without_cuda_refuses_to_start() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA; the refusal is covered by test_engine")
    server = ServerProcess("--providers", "cuda")
    try:
        rc = server.proc.wait(60)
    finally:
        server.stop()
    time.sleep(0.1)
    assert rc != 0
    assert "refusing to start" in server.output
    assert "providers=cuda but the onnxruntime session" in server.output


def test_missing_default_model_refuses_to_start(tmp_path) -> None:
    server = ServerProcess(env={"CONVSERVE_MODEL_DIR": str(tmp_path)})
    try:
        assert server.proc.wait(60) != 0
    finally:
        server.stop()
    time.sleep(0.1)
    assert "no model bundles under" in server.output


def _big_image(seed: int) -> bytes:
    """~40 ms to decode (a 700 px noise PNG took 1 ms once decoding got faster, and every
    post was answered before SIGTERM); sent as image/png, decoded by its bytes."""
    return slow_jpeg(1024, seed)


async def _readiness_until_refused(url: str, timeout_s: float = 10.0) -> list[int | str]:
    """/readyz until it answers 503 (every answer, or the transport error, in order)."""
    answers: list[int | str] = []
    until = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
        while time.monotonic() < until:
            try:
                answers.append((await probe.get("/readyz")).status_code)
            except httpx.TransportError as exc:
                answers.append(repr(exc))
                break
            if answers[-1] == 503:
                break
            await asyncio.sleep(0.01)
    return answers


async def _load_then_sigterm(
    server: ServerProcess, bodies: list[bytes]
) -> tuple[list, list[int | str], float]:
    """Post every body at once, SIGTERM once the first answer is back; the answers, the
    readiness probes after SIGTERM, and how many posts were in flight at SIGTERM."""
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        tasks = [
            asyncio.ensure_future(
                client.post("/predict", content=b, headers={"Content-Type": "image/png"})
            )
            for b in bodies
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        running = await asyncio.to_thread(in_flight, server.url) - 1  # less the held upload
        server.terminate()  # first answers are back, most requests are still in flight
        readiness = await _readiness_until_refused(server.url)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, readiness, running


def test_sigterm_under_load_answers_every_accepted_request() -> None:
    images = distinct_label_images(30)
    # one decode thread and large images keep requests in flight when SIGTERM arrives
    bodies = [data for _, data in images[:10]] + [_big_image(i) for i in range(30)]
    held_label, held_png = images[10]
    server = ServerProcess("--decode-threads", "1", "--drain-timeout-s", "30").start()
    until = time.monotonic() + 60
    try:
        # an upload stalled half-way holds the drain open (the server cannot exit before
        # the test has probed /readyz, however fast the load finishes); sent in full last
        with held_upload(server.url, held_png) as finish_upload:
            while in_flight(server.url) < 1:
                assert time.monotonic() < until, "the held upload did not arrive"
                time.sleep(0.01)
            results, readiness, running = asyncio.run(_load_then_sigterm(server, bodies))
            held = finish_upload()
        rc = server.proc.wait(40)
    finally:
        server.stop()
    assert running >= 1, "every post was answered before SIGTERM: nothing to drain"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors  # nothing was dropped or reset
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 20, statuses  # requests in flight at SIGTERM completed
    for (label, _), r in zip(images[:10], results[:10], strict=True):
        assert r.json()["predictions"][0]["label"] == str(label)
    assert readiness[-1] == 503, readiness  # readiness turned off at once, server still up
    assert set(readiness[:-1]) <= {200}, readiness
    assert held.startswith(b"HTTP/1.1 200"), held[:200]  # the drain ended with it, answered
    assert f'"label":"{held_label}"'.encode() in held, held[-300:]
    assert rc in (0, -15), server.output
    assert "SIGTERM: draining" in server.output


def test_invalid_setting_is_a_clear_message_not_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--max-batch-size", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings: max_batch_size" in result.stderr
    assert "Traceback" not in result.stderr
