"""How many worker processes `workers = 0` (auto, the default) starts.

One Python process serves what one event loop and one GIL allow: on 2 CPUs,
640x480 JPEGs at concurrency 32 (`python -m benchmarks.http_bench`, interleaved
repeats) came out at 326 images/s from one process and 407 from two for the
digits model, 47.5 and 57.7 for the compute-bound 224x224 CNN, with the same
latency at concurrency 1. So on the CPU the default is one worker per CPU this
server may use (affinity and container limit), at most MAX_AUTO_WORKERS: each
worker holds its own copy of every model. One worker on a GPU (each process
would hold its own CUDA context and batch alone) and with
`model_control=explicit` (a load request reaches one worker only).
"""

from __future__ import annotations

from typing import Any

from service.engine import wants_cuda
from service.execution import cpu_share

MAX_AUTO_WORKERS = 4


def resolve_workers(settings: Any) -> tuple[int, str]:
    """The number of worker processes to start, and why (for the start-up log line)."""
    if settings.workers:
        return settings.workers, "set"
    if settings.model_control == "explicit":
        return 1, "auto: model_control=explicit needs one process"
    if wants_cuda(settings.providers):
        return 1, "auto: one process per GPU"
    cpus = cpu_share(1)
    workers = min(cpus, MAX_AUTO_WORKERS)
    return workers, f"auto: {cpus} CPU(s), at most {MAX_AUTO_WORKERS}"
