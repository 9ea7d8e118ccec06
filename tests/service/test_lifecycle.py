"""The server as a process: CLI, start-up refusals, no TensorFlow, graceful SIGTERM under load."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

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


def _big_png(seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (700, 700), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def _load_then_sigterm(server: ServerProcess, bodies: list[bytes]) -> tuple[list, list[int]]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        tasks = [
            asyncio.ensure_future(
                client.post("/predict", content=b, headers={"Content-Type": "image/png"})
            )
            for b in bodies
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        server.terminate()  # first answers are back, most requests are still in flight
        readiness = []
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
            for _ in range(3):
                try:
                    readiness.append((await probe.get("/readyz")).status_code)
                except httpx.TransportError as exc:
                    readiness.append(repr(exc))
                await asyncio.sleep(0.01)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, readiness


def test_sigterm_under_load_answers_every_accepted_request() -> None:
    images = distinct_label_images(30)
    # one decode thread and large images keep requests in flight when SIGTERM arrives
    bodies = [data for _, data in images[:10]] + [_big_png(i) for i in range(30)]
    server = ServerProcess("--decode-threads", "1", "--drain-timeout-s", "30").start()
    try:
        results, readiness = asyncio.run(_load_then_sigterm(server, bodies))
        rc = server.proc.wait(40)
    finally:
        server.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors  # nothing was dropped or reset
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 20, statuses  # requests in flight at SIGTERM completed
    for (label, _), r in zip(images[:10], results[:10], strict=True):
        assert r.json()["predictions"][0]["label"] == str(label)
    assert 503 in readiness, readiness  # readiness turned off at once
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
