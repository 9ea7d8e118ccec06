"""The thread(s) every onnxruntime call runs in, so the event loop never does."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("convserve.batcher")


class InferenceThread:
    """The thread(s) that run every batch, so the event loop never does.

    One by default. More (`count`) let compute-bound models run several batches
    at once, each with fewer onnxruntime intra-op threads: on 2 cores two callers
    with one intra-op thread each beat one caller with two by ~15 % for a
    0.85-GMAC CNN, as onnxruntime's per-operator fork/join costs more than it gains.
    """

    def __init__(self, name: str = "convserve-inference", count: int = 1) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.count = count
        self._threads = [
            threading.Thread(
                target=self._loop, name=name if count == 1 else f"{name}-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # a job must never kill the thread
                log.exception("inference job crashed")
            # an idle thread must not keep the last job's model (and its session) alive
            job = fn = args = None

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self._jobs.put((fn, args))

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
