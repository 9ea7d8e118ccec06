"""Prometheus metrics, one CollectorRegistry per app (tests run several apps).

With `workers` > 1 every worker process is its own server, and a scrape lands
on one of them; so `python -m service` then runs prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set before the workers start):
each process writes its values to files there and `/metrics` adds up all of
them, whichever worker answers. Gauges say how they combine across workers.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import onnxruntime
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from service import __version__, process_metrics
from service.batcher import BatchObserver

disable_created_metrics()  # the *_created series only add noise to every scrape


def _cache_the_pid_of_multiprocess_values() -> None:
    """prometheus_client's multiprocess values ask os.getpid(), a system call, on every
    update to notice a fork: ~45 us per request over its dozen updates (py-spy, two
    workers). The pid is cached instead, and renewed in a forked child, which is what
    that check is for. Before any metric exists: each takes ValueClass when created."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return
    pid = [os.getpid()]
    os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid[0])


_cache_the_pid_of_multiprocess_values()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every metric the server exports; `/metrics` renders `registry`."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "convserve_requests",
            "requests (HTTP, and gRPC calls as their REST twin) by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "convserve_request_duration_seconds",
            "request latency (HTTP and gRPC), first byte in to last out",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "convserve_queue_wait_seconds",
            "time images waited in the batching queue",
            ["model", "version"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "convserve_batch_size",
            "images per onnxruntime call",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "convserve_inference_seconds",
            "duration of one onnxruntime call (one batch)",
            ["model", "version"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "convserve_images",
            "images run through the model",
            ["model", "version"],
            registry=r,
        )
        self.padded_rows = Counter(
            "convserve_padded_rows",
            "zero rows added to batches to reach a warmed-up batch size (pad_batches)",
            ["model", "version"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "convserve_queue_depth",
            "images waiting for inference",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.provider = Gauge(
            "convserve_model_provider",
            "1 for the execution provider each model actually runs on",
            ["model", "version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "convserve_ready",
            "1 when every model is loaded and warmed up (in every worker process)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.in_flight = Gauge(
            "convserve_requests_in_flight",
            "requests being served (HTTP and gRPC)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "convserve_queue_capacity",
            "images that may wait for inference before requests get 503 (max_queue per worker)",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.provider_requested = Gauge(
            "convserve_provider_requested",
            "1 for the `providers` setting (auto, cpu or cuda) the server was started with",
            ["providers"],
            registry=r,
            multiprocess_mode="livemax",
        )
        # counted by the model lifecycle (load, reload); each served model starts at 0
        self.load_failures = Counter(
            "convserve_model_load_failures",
            "attempts to load or reload a model version that failed",
            ["model"],
            registry=r,
        )
        self.build_info = Gauge(
            "convserve_build_info",
            "1, labelled with the versions of convserve, onnxruntime and Python",
            ["version", "onnxruntime", "python"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(__version__, onnxruntime.__version__, platform.python_version()).set(
            1
        )
        process_metrics.install(r, multiprocess=multiprocess_dir() is not None)

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (HTTP or gRPC) in the request counter and the latency
        histogram. The label children are looked up once per route, method and status
        (a few of each), not twice per request."""
        series = self._request_series.get((route, method, status))
        if series is None:
            count, latency = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            series = self._request_series[route, method, status] = (count, latency)
        series[0].inc()
        series[1].observe(seconds)

    def observer(self, model: str, version: str) -> BatchObserver:
        """Batch hooks bound to one model's label children (resolved once, not per call)."""
        size = self.batch_size.labels(model, version)
        seconds = self.inference.labels(model, version)
        images = self.images.labels(model, version)
        wait = self.queue_wait.labels(model, version)
        depth = self.queue_depth.labels(model, version)
        padded = self.padded_rows.labels(model, version)

        def on_batch(rows: int, elapsed: float) -> None:
            size.observe(rows)
            seconds.observe(elapsed)
            images.inc(rows)

        return BatchObserver(
            on_batch=on_batch,
            on_queue_wait=wait.observe,
            on_queue_depth=depth.set,
            on_padding=padded.inc,
        )

    def watch_model(
        self,
        model: str,
        version: str,
        provider: str,
        *,
        requested: str = "auto",
        max_queue: int | None = None,
    ) -> None:
        """Series for a model version that starts serving: what alerts compare against."""
        self.queue_depth.labels(model, version).set(0)
        self.provider.labels(model, version, provider).set(1)
        self.provider_requested.labels(requested).set(1)
        self.load_failures.labels(model)  # exists (at 0) before the first failure
        if max_queue is not None:
            self.queue_capacity.labels(model, version).set(max_queue)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's in multiprocess mode."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        process_metrics.refresh()  # the answering worker's own readings, fresh
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return generate_latest(combined)


def multiprocess_dir() -> str | None:
    """Where worker processes keep their metric files, when there are several."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_stopped() -> None:
    """Drop this process's live gauges (in flight, queue depth, ready) from the sums."""
    if multiprocess_dir() is not None:
        process_metrics.stop()
        multiprocess.mark_process_dead(os.getpid())
