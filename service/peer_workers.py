"""The worker processes of one server become ready together.

Each worker has its own readiness, and a probe lands on whichever worker
accepts it: with workers warming up one at a time (execution.tuning_alone), a
pod answered /readyz 200 from the first worker and 503 from the next a moment
later. So a worker that has warmed up writes its pid to a file in the workers'
shared directory (PROMETHEUS_MULTIPROC_DIR) and reports ready only once every
worker has; pids of processes that are gone do not count (a worker that died is
restarted and writes its own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("convserve.workers")

WARMED_FILE = ".warmed"
POLL_S = 0.05
PEER_WAIT_S = 120.0  # workers warm up one at a time, each within seconds


def _shared_dir() -> Path | None:
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(shared) if shared else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def mark_warmed(shared: Path | None = None) -> None:
    """This process has warmed up (one short append: atomic with O_APPEND)."""
    shared = shared or _shared_dir()
    if shared is not None:
        with open(shared / WARMED_FILE, "a") as f:
            f.write(f"{os.getpid()}\n")


def warmed_workers(shared: Path | None = None) -> int:
    """How many live processes have warmed up."""
    shared = shared or _shared_dir()
    try:
        text = (shared / WARMED_FILE).read_text() if shared is not None else ""
    except FileNotFoundError:
        return 0
    return sum(_alive(pid) for pid in {int(line) for line in text.split() if line.isdigit()})


async def wait_for_peers(workers: int, timeout_s: float, shared: Path | None = None) -> bool:
    """Until `workers` live processes have warmed up (True) or `timeout_s` passed (False).

    One worker, or no shared directory: at once.
    """
    shared = shared or _shared_dir()
    if workers <= 1 or shared is None:
        return True
    deadline = time.monotonic() + timeout_s
    while (done := warmed_workers(shared)) < workers:
        if time.monotonic() >= deadline:
            log.warning("%d of %d workers warmed up after %.0f s: ready anyway",
                        done, workers, timeout_s)  # fmt: skip
            return False
        await asyncio.sleep(POLL_S)
    return True
