"""The lifecycle's Prometheus series: loads, failures, the served version, the last reload.

Registered on the app's own CollectorRegistry (service.metrics.Metrics.registry),
so they appear in /metrics next to everything else, and in multiprocess mode
(workers > 1) they combine across workers as each gauge says.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class LifecycleMetrics:
    """Counters and gauges that ModelControl updates on every load and unload."""

    def __init__(self, registry: CollectorRegistry, failures: Counter | None = None) -> None:
        self.loads = Counter(
            "convserve_model_loads",
            "model versions loaded, verified and warmed up while the server runs",
            ["model"],
            registry=registry,
        )
        # service.metrics.Metrics registers this one (it exists at 0 for every model)
        self.failures = failures or Counter(
            "convserve_model_load_failures",
            "attempts to load or reload a model version that failed",
            ["model"],
            registry=registry,
        )
        self.unloads = Counter(
            "convserve_model_unloads",
            "model versions unloaded (queued work finished, onnxruntime session freed)",
            ["model"],
            registry=registry,
        )
        self.version_info = Gauge(
            "convserve_model_version_info",
            "1 for the version each model serves by default (the highest loaded), 0 for others",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.last_reload = Gauge(
            "convserve_model_last_reload_timestamp_seconds",
            "when a version of this model was last loaded or unloaded (Unix time)",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )

    def serving(self, model: str, versions: list[str], previous: list[str]) -> None:
        """The loaded versions of `model` changed: mark the default one, clear the rest."""
        default = max(versions, key=int) if versions else None
        for version in set(previous) | set(versions):
            self.version_info.labels(model, version).set(1 if version == default else 0)

    def reloaded(self, model: str) -> None:
        self.last_reload.labels(model).set(time.time())

    def failed(self, model: str) -> None:
        self.failures.labels(model).inc()
