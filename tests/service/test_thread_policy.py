"""Inference threads run as normal threads; the loop, the decode pool and what they start
yield to them (SCHED_BATCH). Read back from the kernel, on a real server and real sessions."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest

from service import thread_policy
from service.engine import Engine, EngineOptions
from tests.service.serving import DIGITS, LiveServer, digit_images

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is a Linux scheduling policy"
)
T = TypeVar("T")


def _in_new_thread(fn: Callable[[], T]) -> T:
    """`fn` on a thread of its own, so pytest's thread keeps its policy."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(60)
    assert out, "the thread raised or hung"
    return out[0]


def _tasks() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def test_a_side_thread_and_the_threads_it_starts_yield_an_inference_thread_does_not() -> None:
    def body() -> tuple[int, int, int]:
        thread_policy.side()
        child = _in_new_thread(lambda: os.sched_getscheduler(0))
        inference = _in_new_thread(lambda: (thread_policy.inference(), os.sched_getscheduler(0))[1])
        return os.sched_getscheduler(0), child, inference

    assert _in_new_thread(body) == (os.SCHED_BATCH, os.SCHED_BATCH, os.SCHED_OTHER)


def test_a_session_made_on_a_side_thread_gets_normal_intra_op_threads() -> None:
    """onnxruntime starts a session's intra-op threads when it is made: they inherit the
    policy of the thread that makes it, which is the loop or a helper of it."""

    def body() -> tuple[dict[int, int], int]:
        thread_policy.side()
        before = _tasks()
        engine = Engine(DIGITS / "model.onnx", EngineOptions(providers="cpu", intra_op_threads=3))
        started = {tid: os.sched_getscheduler(tid) for tid in _tasks() - before}
        del engine
        return started, os.sched_getscheduler(0)

    started, after = _in_new_thread(body)
    assert len(started) >= 2, "onnxruntime started no intra-op threads for 3 threads"
    assert set(started.values()) == {os.SCHED_OTHER}
    assert after == os.SCHED_BATCH  # the maker went back to yielding


def test_a_live_server_runs_inference_threads_normal_and_the_rest_yielding(
    server: LiveServer,
) -> None:
    images = [data for _, data in digit_images()[:2]]
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    answer = httpx.post(f"{server.url}/predict", files=files, timeout=30)
    assert answer.status_code == 200  # two uploads: decoded in the pool, run on the thread
    threads = {t.name: t.native_id for t in threading.enumerate()}
    inference = [tid for name, tid in threads.items() if name.startswith("convserve-inference")]
    decode = [tid for name, tid in threads.items() if name.startswith("convserve-decode")]
    assert inference and decode
    assert {os.sched_getscheduler(tid) for tid in inference} == {os.SCHED_OTHER}
    assert {os.sched_getscheduler(tid) for tid in decode} == {os.SCHED_BATCH}
    assert os.sched_getscheduler(server._thread.native_id) == os.SCHED_BATCH  # the loop


def test_without_sched_setscheduler_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS defines os.SCHED_OTHER but not os.sched_setscheduler: an inference thread
    calling `inference()` there must not die."""
    monkeypatch.delattr(os, "sched_setscheduler")

    def body() -> tuple[int, int]:
        before = os.sched_getscheduler(0)  # what it inherited (a test's app may have set it)
        thread_policy.side()
        thread_policy.inference()
        with thread_policy.as_inference():
            pass
        return before, os.sched_getscheduler(0)

    before, after = _in_new_thread(body)
    assert after == before
