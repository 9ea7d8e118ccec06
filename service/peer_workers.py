"""What the worker processes of one server tell each other: tuning, ready, and busy.

Tuning: workers tune (and warm up) one at a time, under a lock file
(`tuning_alone`).

Each worker has its own readiness, and a probe lands on whichever worker
accepts it: with workers warming up one at a time (`tuning_alone`), a
pod answered /readyz 200 from the first worker and 503 from the next a moment
later. So a worker that has warmed up writes its pid to a file in the workers'
shared directory (PROMETHEUS_MULTIPROC_DIR) and reports ready only once every
worker has; pids of processes that are gone do not count (a worker that died is
restarted and writes its own).

Busy: a worker with one CPU's share may still run a lone request (or a batch)
on every CPU (the tuner's solo session), but only while the other workers have
nothing in flight: two workers each running two spinning threads on two cores
served a compute-bound CNN at concurrency 2 at 64 requests/s where one worker
served 101. Each worker sets a flag in a small file mapped by all of them
(`PeerLoad`) when its first request arrives and clears it when its last leaves.

Connections: beside the flag each worker publishes how many connections it holds,
so that a worker accepts a new one only while no other holds fewer
(service/balanced_accept.py).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: workers tune side by side, no shared busy flags
    fcntl = None

log = logging.getLogger("convserve.workers")

TUNING_LOCK = ".tuning.lock"
WARMED_FILE = ".warmed"
POLL_S = 0.05
PEER_WAIT_S = 120.0  # workers warm up one at a time, each within seconds
BUSY_FILE = ".busy"
SLOTS = 64  # workers (restarts included) that can hold a slot at once
IDLE_AFTER_MS = 100
_FIELDS = 4  # pid, busy, last busy (ms), open connections (-1: not accepting)
_WRAP = 1 << 31


def _shared_dir() -> Path | None:
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(shared) if shared else None


@contextmanager
def tuning_alone() -> Iterator[None]:
    """Worker processes of one server tune (and warm up) one at a time.

    Timings taken while another worker times or warms up its own sessions measure
    the machine shared, not the machine: two workers tuning together chose one
    intra-op thread for a lone request where two were 35 % faster. The workers
    share PROMETHEUS_MULTIPROC_DIR (service/__main__.py), so a lock file there
    orders them (service/loader.py's warm_model holds it).
    """
    shared = _shared_dir()
    if shared is None or fcntl is None:
        yield
        return
    with open(shared / TUNING_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


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


class PeerLoad:
    """(pid, busy, when last busy, connections) as int32 per worker in `BUSY_FILE`, mapped
    by every worker.

    A slot is claimed under an flock: the first one that is free or whose pid is
    gone. A worker without a slot (over SLOTS live ones) is never idle to the others.
    "Idle" means not busy for IDLE_AFTER_MS: a worker whose only client sends a
    request every few milliseconds is busy, not idle between two of them.
    """

    def __init__(self, shared: Path) -> None:
        self._fd = os.open(shared / BUSY_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _FIELDS * 4
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
            self._ints = memoryview(self._map).cast("i")
            self._slot = self._claim()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _claim(self) -> int | None:
        ints = self._ints
        for slot in range(SLOTS):
            pid = ints[_FIELDS * slot]
            if pid == 0 or not _alive(pid):
                base = _FIELDS * slot
                ints[base + 1], ints[base + 2], ints[base + 3] = 0, 0, -1
                ints[base] = os.getpid()  # last: a peer never sees this pid with stale fields
                return slot
        log.warning("no free slot in %s: the other workers never see this one idle", BUSY_FILE)
        return None

    @property
    def slot(self) -> int | None:
        return self._slot

    def set_busy(self, busy: bool) -> None:
        if self._slot is not None:
            base = _FIELDS * self._slot
            self._ints[base + 2] = _now_ms()  # on both edges: the last moment it was busy
            self._ints[base + 1] = int(busy)

    def set_connections(self, count: int) -> None:
        """How many connections this worker holds (-1: it does not accept any)."""
        if self._slot is not None:
            self._ints[_FIELDS * self._slot + 3] = count

    def _others(self) -> Iterator[tuple[int, int]]:
        """(pid, first field's index) of every slot another worker claimed; the pid may
        be gone (ask `_alive` last: it is a system call)."""
        ints = self._ints
        for slot in range(SLOTS):
            base = _FIELDS * slot
            if slot != self._slot and (pid := ints[base]):
                yield pid, base

    def fewest_peer_connections(self) -> int | None:
        """The fewest connections any other live, accepting worker holds; None if none."""
        fewest = None
        for pid, base in self._others():
            count = self._ints[base + 3]
            if count >= 0 and (fewest is None or count < fewest) and _alive(pid):
                fewest = count
        return fewest

    def others_idle(self) -> bool:
        """No other live worker is busy, or was in the last IDLE_AFTER_MS."""
        if self._slot is None:
            return False
        ints, now = self._ints, _now_ms()
        for pid, base in self._others():
            recent = ints[base + 1] or (now - ints[base + 2]) % _WRAP < IDLE_AFTER_MS
            if recent and _alive(pid):
                return False
        return True


def _now_ms() -> int:
    """CLOCK_MONOTONIC (one clock for every process) in ms, wrapped into an int32."""
    return int(time.monotonic() * 1000) % _WRAP


_peers: PeerLoad | None = None


def track_peers(workers: int) -> PeerLoad | None:
    """This process's slot among `workers` > 1 workers sharing a directory; else None."""
    global _peers
    shared = _shared_dir()
    if workers > 1 and shared is not None and fcntl is not None and _peers is None:
        _peers = PeerLoad(shared)
    return _peers


def current() -> PeerLoad | None:
    """This process's slot, once `track_peers` gave it one."""
    return _peers


def others_idle() -> bool:
    """True when no other worker of this server is busy (always, with one worker)."""
    return _peers is None or _peers.others_idle()


def tracking() -> bool:
    """Whether this process shares the machine with other workers it can see."""
    return _peers is not None
