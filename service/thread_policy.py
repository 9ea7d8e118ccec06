"""Inside a worker, the inference threads get the CPU first; the other threads wait their turn.

A worker with one CPU runs its event loop, its decode threads and its inference
thread on that CPU. Linux preempts a running thread for one that wakes up, so
every arriving body and every finished decode used to interrupt a run: 6
preemptions per 13 ms heavy224 run, each evicting the run's caches. The side
threads (the event loop, and every thread it starts: the decode pool, asyncio's
helpers, gRPC's) run as SCHED_BATCH: the kernel does not preempt a running
thread for them when they wake. They still get their fair share of the CPU, at
the end of the running thread's time slice (a few ms at most). Inference threads,
and the intra-op threads onnxruntime starts for a session, stay normal threads.

SCHED_BATCH needs no privilege, and a thread may always switch back to normal.
Off Linux, or where the kernel or a sandbox refuses it, every call here is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("convserve.engine")
_BATCH = getattr(os, "SCHED_BATCH", None)
_NORMAL = getattr(os, "SCHED_OTHER", None)
_refused = False  # said once per process, then quiet


def _set(policy: int | None) -> bool:
    global _refused
    setter = getattr(os, "sched_setscheduler", None)  # macOS has SCHED_OTHER, not this
    if policy is None or setter is None or _refused:
        return False
    try:
        setter(0, policy, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:  # a sandbox without sched_setscheduler: nothing to gain or lose
        _refused = True
        log.info("thread scheduling policy left as is: %s", exc)
        return False
    return True


def side() -> None:
    """The calling thread (and the threads it starts from now on) yields to inference."""
    _set(_BATCH)


def inference() -> None:
    """The calling thread is an inference thread: a normal thread, whatever it inherited."""
    _set(_NORMAL)


@contextmanager
def as_inference() -> Iterator[None]:
    """Run the block as an inference thread, then go back to the thread's policy.

    For creating sessions and timing them: the threads onnxruntime and the tuner
    start inside inherit the policy of the thread that starts them.
    """
    try:
        before = os.sched_getscheduler(0)
    except (AttributeError, OSError):
        yield
        return
    changed = before != _NORMAL and _set(_NORMAL)
    try:
        yield
    finally:
        if changed:
            _set(before)
