"""Publishing and retiring versions: the only code that changes what the registry serves.

A change is one whole-map replace, so a request resolves the old map or the
new one, never half of each. A version taken out is retired in the
background: its queued work finishes, then its session is freed
(release.py), and only then does the index say it is unloaded (or forget it).
control.py decides what to publish; this module does it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from service.lifecycle.index import Index, State
from service.lifecycle.metrics import LifecycleMetrics
from service.lifecycle.release import Retirable, release

log = logging.getLogger("convserve.lifecycle")

Models = Mapping[str, Mapping[str, Retirable]]


class SwappableRegistry(Protocol):
    """The registry as model control sees it: read the served map, replace it whole."""

    default: str

    def models(self) -> Models: ...

    def replace(self, models: dict[str, dict[str, Retirable]]) -> None: ...


class Publisher:
    """Swaps single versions in and out of the registry; retires the ones swapped out."""

    def __init__(
        self,
        registry: SwappableRegistry,
        index: Index,
        *,
        free_timeout_s: float,
        metrics: LifecycleMetrics | None,
        on_unloaded: Callable[[str, str, str], None],
    ) -> None:
        self._registry = registry
        self._index = index
        self._free_timeout_s = free_timeout_s
        self._metrics = metrics
        self._on_unloaded = on_unloaded
        self._retiring: set[asyncio.Task] = set()

    def publish(self, name: str, version: str, model: Retirable | None) -> Retirable | None:
        """Replace the registry's map with `version` set to `model` (None: removed);
        returns the model it replaced. One assignment, so resolve() sees before or after."""
        current = self._registry.models()
        previous = list(current.get(name, {}))
        models = {n: dict(vs) for n, vs in current.items()}
        del current
        versions = models.setdefault(name, {})
        old = versions.pop(version, None)
        if model is not None:
            versions[version] = model
        if not versions:
            del models[name]
        self._registry.replace(models)
        if self._metrics is not None:
            self._metrics.serving(name, list(versions), previous)
            self._metrics.reloaded(name)
        return old

    def unpublish(
        self, name: str, version: str, state: State | None, reason: str
    ) -> asyncio.Task | None:
        """Stop handing `version` out now; drain and free it in the background. Once freed,
        the index says `state` with `reason` (None: the entry is dropped)."""
        old = self.publish(name, version, None)
        if old is None:
            return None
        log.info("%s version %s: unloading (no new requests; queued work finishes)", name, version)
        self._index.set(name, version, State.UNLOADING)
        task = self.retire([old], state, reason)
        del old
        return task

    def retire(self, holder: list[Retirable], state: State | None, reason: str) -> asyncio.Task:
        """Drain and free the model in `holder` (a one-item list: the caller keeps no
        reference) in the background; the index changes only if it was not reloaded."""
        name, version = holder[0].name, holder[0].version
        provider = str(getattr(holder[0], "provider", ""))

        async def retire() -> None:
            await release(holder, timeout_s=self._free_timeout_s)
            if self._metrics is not None:
                self._metrics.unloads.labels(name).inc()
            if version not in self._registry.models().get(name, {}):  # not reloaded meanwhile
                self._on_unloaded(name, version, provider)
                if state is None:
                    self._index.drop(name, version)
                else:
                    self._index.set(name, version, state, reason)

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def wait(self) -> None:
        """Until every version being retired is freed (shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
