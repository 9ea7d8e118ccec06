"""The in-process limit is the yardstick every HTTP figure is divided by: it must not flatter."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks import inprocess


class SerialModel:
    """Stands in for a model whose runs cannot overlap: 100 images/s whatever the threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def preprocess(self, data: bytes) -> np.ndarray:
        return np.zeros((1,), np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            time.sleep(0.01)
        return batch


def test_threads_that_start_apart_count_in_one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # On two busy cores the 64th thread starts seconds after the first. Each thread
    # timing its own window summed images over windows that barely overlapped.
    start = threading.Thread.start

    def slow_start(self: threading.Thread) -> None:
        start(self)
        time.sleep(0.15)

    monkeypatch.setattr(threading.Thread, "start", slow_start)
    got = inprocess.measure_single(SerialModel(), b"", concurrency=8, duration=0.6, warmup=0.1)
    assert got["images_per_s"] <= 105, got  # the runs are serial: 100/s at most


def test_the_limit_also_tries_one_thread_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[int] = []

    def fake_single(model: object, data: bytes, *, concurrency: int, **_: float) -> dict:
        tried.append(concurrency)
        return {"images_per_s": 100.0 if concurrency == 2 else 50.0, "p50_ms": 1.0}

    monkeypatch.setattr(inprocess.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(inprocess, "measure_single", fake_single)
    got = inprocess.measure_limit(SerialModel(), b"", inflight=1, max_batch=32)
    assert tried == [1] and got["images_per_s"] == 50.0
    got = inprocess.measure_limit(SerialModel(), b"", inflight=32, max_batch=1)
    assert tried == [1, 32, 2]
    assert got["single"]["images_per_s"] == 100.0
