"""The thread(s) every onnxruntime call runs in, so the event loop never does."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from service import thread_policy

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
        self._name = name
        self.count = 0
        self._threads: list[threading.Thread] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        """At least `count` threads (a model tuned to run that many batches at once)."""
        while self.count < count:
            name = self._name if count == 1 else f"{self._name}-{self.count}"
            thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._threads.append(thread)
            self.count += 1
            thread.start()

    def _loop(self) -> None:
        thread_policy.inference()  # started by the loop, a side thread (service/thread_policy.py)
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
