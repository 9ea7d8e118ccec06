"""Start-up of the model repository: the first registry and the ModelControl that owns it.

`none` keeps the strict start (service.loader.build_registry: a broken bundle
refuses to start). `poll` and `explicit` start from what verifies: a version
still being copied, or corrupt, is reported in the index and skipped, so a pod
starting next to a copy in progress comes up; only a default model with no
loadable version refuses the start. New versions later are loaded here too:
session, then warm-up, both before the version is published.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from service.lifecycle.control import ModelControl
from service.lifecycle.metrics import LifecycleMetrics
from service.lifecycle.scan import Candidate, Scanner
from service.loader import StartupError, build_registry, load_model, warm_model
from service.models import Registry, ServedModel
from service.repository import BundleRef

if TYPE_CHECKING:
    from service.inference_thread import InferenceThread
    from service.metrics import Metrics
    from service.settings import Settings

log = logging.getLogger("convserve.lifecycle")


def open_repository(
    settings: Settings, *, metrics: Metrics, worker: InferenceThread
) -> tuple[Registry, ModelControl]:
    """The registry to serve at start, and the control that changes it later (blocking)."""
    scanner = Scanner(settings.model_dir)

    def load(cand: Candidate, *, warm: bool = True) -> ServedModel:
        assert cand.bundle is not None
        ref = BundleRef(cand.name, cand.version, cand.path, cand.bundle)
        model = load_model(ref, settings, metrics=metrics, worker=worker)
        if warm:
            warm_model(model, settings.max_batch_size)
        return model

    found: dict[str, dict[str, Candidate]] = {}
    failures: dict[tuple[str, str], str] = {}
    if settings.model_control == "none":
        registry = build_registry(settings, metrics=metrics, worker=worker)
    else:
        found = scanner.scan()
        models: dict[str, dict[str, ServedModel]] = {}
        for name, versions in found.items():
            for version, cand in versions.items():
                if not cand.valid:
                    continue
                try:  # warmed up with the others before ready, as at every start
                    models.setdefault(name, {})[version] = load(cand, warm=False)
                except Exception as exc:
                    failures[(name, version)] = str(exc)
                    log.error("%s version %s cannot be served: %s", name, version, exc)
        if settings.default_model not in models:
            raise StartupError(_no_default(settings, found, failures))
        registry = Registry(models, settings.default_model)

    def unloaded(name: str, version: str, provider: str) -> None:
        """A retired version's gauges go to 0 (multiprocess files cannot drop a series)."""
        metrics.provider.labels(name, version, provider).set(0)
        metrics.queue_depth.labels(name, version).set(0)
        metrics.queue_capacity.labels(name, version).set(0)

    control = ModelControl(
        settings.model_control,
        scanner,
        registry,
        load,
        poll_s=settings.model_poll_s,
        # requests that resolved the old version just before the swap hold it at most this long
        free_timeout_s=settings.request_timeout_s + 5,
        metrics=LifecycleMetrics(metrics.registry, failures=metrics.load_failures),
        on_unloaded=unloaded,
    )
    control.adopt(found, failures)
    return registry, control


def _no_default(
    settings: Settings,
    found: dict[str, dict[str, Candidate]],
    failures: dict[tuple[str, str], str],
) -> str:
    name = settings.default_model
    where = settings.model_dir.resolve()
    if name not in found:
        return (
            f"default model {name!r} is not under {where} (found: {', '.join(found) or 'nothing'});"
            " set CONVSERVE_DEFAULT_MODEL or --default-model"
        )
    reasons = "; ".join(
        f"version {v}: {failures.get((name, v)) or c.reason}" for v, c in found[name].items()
    )
    return f"default model {name!r} has no version that can be served under {where}: {reasons}"
