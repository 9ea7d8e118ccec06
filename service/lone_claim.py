"""The claim a lone upload's pool job holds on its model, given back exactly once.

A lone upload (service/lone_upload.py) is decoded and run in one pool
job while it holds its model's batcher (`Batcher.claim`): batches queue behind
it. The request may stop waiting before that job ends (its deadline passes
while the image decodes, or its client goes away). Then the model must never
start for it, and the claim must not outlive the work it stands for, nor be
given back while the model still runs:

- the model has not started: it never will (`run` refuses), the claim is given
  back at once and the queue moves on while the thread finishes decoding;
- the model runs: the claim is given back by the pool thread when it ends.

A lock orders the thread's "start the model" against the loop's "stop waiting".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import numpy as np

from service.batcher import Batcher, DeadlineExceeded

_WAITING, _RUNNING, _DONE, _GAVE_UP, _LEFT_RUNNING = range(5)


class LoneClaim:
    """`batcher.claim()` now; `run` in the pool job; `end()` on the loop when the request
    stops waiting, whatever the outcome."""

    def __init__(
        self,
        batcher: Batcher,
        run_model: Callable[[np.ndarray], dict[str, np.ndarray]],
        deadline: float,
    ) -> None:
        self._batcher = batcher
        self._run_model = run_model
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._phase = _WAITING
        self._ran = False
        self._start = time.perf_counter()
        batcher.claim()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model on the decoded upload, unless the request gave up or its deadline passed."""
        with self._lock:
            if self._phase != _WAITING or time.monotonic() >= self._deadline:
                self._phase = _GAVE_UP if self._phase == _WAITING else self._phase
                raise DeadlineExceeded("the request's deadline passed before inference")
            self._phase = _RUNNING
            self._ran = True
        try:
            return self._run_model(batch)
        finally:
            with self._lock:
                left = self._phase == _LEFT_RUNNING
                self._phase = _DONE
            if left:  # nobody waits: the claim is given back from here, on the loop
                with suppress(RuntimeError):  # the loop is gone: nothing to give back to
                    self._loop.call_soon_threadsafe(self._release)

    def end(self) -> None:
        """The request stops waiting (on the loop): give the claim back unless the model runs."""
        with self._lock:
            if self._phase == _RUNNING:
                self._phase = _LEFT_RUNNING  # the pool thread releases when the model is done
                return
            if self._phase == _WAITING:
                self._phase = _GAVE_UP
        self._release()

    def _release(self) -> None:
        self._batcher.release(1 if self._ran else 0, time.perf_counter() - self._start)
