"""`process_*` metrics (CPU, memory, file descriptors) in one process or several workers.

One process: prometheus_client's own ProcessCollector on the app's registry.
Several workers (multiprocess mode): collectors are not shared through the
metric files, so each worker copies its ProcessCollector readings into
multiprocess-aware metrics of the same names, every `REFRESH_S` seconds and
right before it renders a scrape. Combined over the live workers:

- `process_cpu_seconds_total`: a counter each worker advances by its own CPU
  time, so the sum is every worker's CPU and never goes down when one restarts;
- `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
  `process_open_fds`: summed (the server's total, as a pod's memory limit sees it);
- `process_max_fds`: the lowest; `process_start_time_seconds`: the oldest worker's.

The same names in both modes, so alerts and dashboards need not know the mode.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

REFRESH_S = 5.0

_GAUGES = {
    "process_virtual_memory_bytes": ("Virtual memory size in bytes", "livesum"),
    "process_resident_memory_bytes": ("Resident memory size in bytes", "livesum"),
    "process_open_fds": ("Number of open file descriptors", "livesum"),
    "process_max_fds": ("Maximum number of open file descriptors", "livemin"),
    "process_start_time_seconds": ("Start time of the process since unix epoch", "livemin"),
}


class _WorkerProcessMetrics:
    """This worker's readings, written to the multiprocess files (one per process)."""

    def __init__(self) -> None:
        self._source = ProcessCollector(registry=None)
        # registry=None: in multiprocess mode values live in the files, and /metrics
        # renders the files, not a registry
        self._gauges = {
            name: Gauge(name, doc, registry=None, multiprocess_mode=mode)
            for name, (doc, mode) in _GAUGES.items()
        }
        self._cpu = Counter(
            "process_cpu_seconds", "Total user and system CPU time spent in seconds", registry=None
        )
        self._cpu_seen = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="convserve-process-metrics", daemon=True
        )
        self._thread.start()

    def refresh(self) -> None:
        with self._lock:
            if self._stop.is_set():  # after mark_process_dead: never write a dead pid's files
                return
            for family in self._source.collect():
                for sample in family.samples:
                    if sample.name == "process_cpu_seconds_total":
                        delta = sample.value - self._cpu_seen
                        if delta > 0:
                            self._cpu.inc(delta)
                            self._cpu_seen = sample.value
                    elif sample.name in self._gauges:
                        self._gauges[sample.name].set(sample.value)

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()


_worker: _WorkerProcessMetrics | None = None


def install(registry: CollectorRegistry, multiprocess: bool) -> None:
    """Export process_* for `registry`'s app; in multiprocess mode start this worker's copier."""
    global _worker
    if not multiprocess:
        ProcessCollector(registry=registry)
        return
    if _worker is None:
        _worker = _WorkerProcessMetrics()
    _worker.refresh()


def refresh() -> None:
    """Bring this worker's readings up to date (before rendering a multiprocess scrape)."""
    if _worker is not None:
        _worker.refresh()


def stop() -> None:
    """Stop writing this worker's readings (it is shutting down)."""
    if _worker is not None:
        _worker.stop()
