"""benchmarks/bare_server.py answers as onnxruntime does; benchmarks/interleave.py runs.

The bare server is the yardstick for what uvicorn alone costs: it must do the
same image work (the service's preprocess, batch-1 onnxruntime) or its figure
means nothing. Both run as real processes over loopback; nothing is timed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks import wrk
from benchmarks.photo import PHOTO
from tests.service.serving import free_port, reference

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare() -> Iterator[str]:
    """The bare server, 1 worker, on the committed digits model; its port."""
    port = str(free_port())
    env = {**os.environ, "BARE_MODEL": str(ROOT / "models/digits/1"), "BENCH_PORT": port}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.bare_server:app", "--port", port,
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_bare_server_answers_what_onnxruntime_answers(bare: str) -> None:
    photo = PHOTO.read_bytes()
    answer = httpx.post(f"http://127.0.0.1:{bare}/predict", content=photo, timeout=30).json()
    (answer,) = answer["predictions"]
    expected = reference([photo])["probabilities"][0]
    assert answer["label"] == str(int(np.argmax(expected)))
    assert answer["probability"] == pytest.approx(float(expected.max()), abs=1e-6)
    junk = httpx.post(f"http://127.0.0.1:{bare}/predict", content=b"not an image", timeout=30)
    assert junk.status_code == 400


@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (apt-get install -y wrk)")
def test_interleave_reports_each_target_with_its_servers_cpu(bare: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.interleave", "--seconds", "1", "--rounds", "2",
         "--concurrency", "2", bare],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"{bare}/predict (1 processes) c=2: req/s ")
    assert "server CPU" in line and " 0 us/request" not in line


@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (apt-get install -y wrk)")
def test_thread_cpu_reports_the_cpu_of_the_thread_that_did_the_work(bare: str) -> None:
    """The bare server decodes and runs on its main thread: that thread used the CPU."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.thread_cpu", bare, "--seconds", "1",
         "--concurrency", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    head, *rows = done.stdout.splitlines()
    assert head.startswith(f"{bare}/predict c=2: ")
    main = [r for r in rows if r.rstrip().endswith(("MainThread", "main (event loop)"))]
    assert len(main) == 1, done.stdout
    cpu = int(re.search(r"(\d+) us \(user", main[0]).group(1))
    total = int(re.search(r"all threads: (\d+) us", rows[-1]).group(1))
    assert 0 < cpu <= total
