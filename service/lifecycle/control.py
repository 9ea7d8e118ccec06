"""Model control: make the served versions follow the model directory, never serving half a model.

`none`: what is on disk at start is served, nothing changes afterwards.
`poll`: every `poll_s` seconds the directory is scanned and each model synced.
`explicit`: a model is synced when asked (`load`) or dropped (`unload`), as
Triton's repository extension does.

Syncing one model: every valid version directory that is not loaded (or
whose files changed) is loaded off the event loop (session, then warm-up)
and only then published into the registry in one atomic replace, so the
highest loaded version becomes the default without a request ever seeing a
half-built model; versions whose directory is gone are unpublished, and
their queued work finishes before their session is freed (publish.py swaps
the registry and retires, release.py frees). A
version that fails anywhere is reported in the index with its reason, the
old one keeps serving, and the same bytes are not retried until they change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from service.lifecycle.errors import (
    ControlDisabled,
    DefaultModelRequired,
    LoadFailed,
    NoSuchModel,
)
from service.lifecycle.index import Index, State
from service.lifecycle.metrics import LifecycleMetrics
from service.lifecycle.publish import Publisher, SwappableRegistry
from service.lifecycle.release import Retirable
from service.lifecycle.scan import Candidate, Fingerprint, Scanner

log = logging.getLogger("convserve.lifecycle")

Mode = Literal["none", "poll", "explicit"]


class ModelControl:
    """Owns every change to the served set after start-up; one change at a time."""

    def __init__(
        self,
        mode: Mode,
        scanner: Scanner,
        registry: SwappableRegistry,
        load: Callable[[Candidate], Retirable],
        *,
        poll_s: float = 1.0,
        free_timeout_s: float = 60.0,
        metrics: LifecycleMetrics | None = None,
        on_unloaded: Callable[[str, str, str], None] = lambda name, version, provider: None,
    ) -> None:
        self.mode = mode
        self.scanner = scanner
        self.registry = registry
        self._load = load  # blocking: creates the session and warms it up
        self.poll_s = poll_s
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._loaded: dict[tuple[str, str], Fingerprint] = {}  # what each served version is
        self._failed: dict[tuple[str, str], Fingerprint] = {}  # loads not to retry unchanged
        # invalid versions: fingerprint, since when unchanged, counted as a failure yet
        self._invalid: dict[tuple[str, str], tuple[Fingerprint | None, float, bool]] = {}
        self.settle_s = max(3 * poll_s, 5.0)
        self._unloaded: set[str] = set()  # explicitly unloaded names (explicit mode)
        self._poller: asyncio.Task | None = None
        self.index = Index()
        self._publisher = Publisher(
            registry,
            self.index,
            free_timeout_s=free_timeout_s,
            metrics=metrics,
            on_unloaded=on_unloaded,
        )

    # ---- start-up -------------------------------------------------------
    def adopt(
        self,
        candidates: dict[str, dict[str, Candidate]],
        failures: dict[tuple[str, str], str] | None = None,
    ) -> None:
        """Record what start-up loaded (the registry's models) and what it could not (why)."""
        served = self.registry.models()
        failures = failures or {}
        for name, versions in candidates.items():
            for version, cand in versions.items():
                if version in served.get(name, {}):
                    self._loaded[(name, version)] = cand.fingerprint
                elif (name, version) in failures:
                    self._failed[(name, version)] = cand.fingerprint
                    reason = f"load failed: {failures[(name, version)]}"
                    self.index.set(name, version, State.UNAVAILABLE, reason)
                else:
                    self.index.set(name, version, State.UNAVAILABLE, cand.reason or "not loaded")
        for name, versions in served.items():
            for version in versions:
                self.index.set(name, version, State.READY)
            if self._metrics is not None:
                self._metrics.serving(name, list(versions), [])

    # ---- the three triggers ---------------------------------------------
    async def poll(self) -> None:
        """One pass over the whole model directory (poll mode)."""
        async with self._lock:
            found = await asyncio.to_thread(self.scanner.scan)
            for name in sorted(set(found) | set(self.registry.models())):
                await self._sync(name, found.get(name, {}), explicit=False)

    async def load(self, name: str) -> None:
        """Explicit mode: (re)load `name` from disk; LoadFailed when no version serves."""
        self._require_explicit("load")
        if not _plain_name(name):  # never a path out of the model directory, whatever its layout
            raise NoSuchModel(f"no model {name!r}: a model name is one plain directory name")
        async with self._lock:
            found = await asyncio.to_thread(self.scanner.scan_model, name, fresh=True)
            if not found and name not in self.registry.models():
                raise NoSuchModel(
                    f"no model {name!r} under the model directory "
                    f"(expected {name}/<version>/bundle.json)"
                )
            self._unloaded.discard(name)
            await self._sync(name, found, explicit=True)
            if not self.registry.models().get(name):
                reasons = "; ".join(
                    f"version {e['version']}: {e['reason']}" for e in self.index.of(name)
                )
                raise LoadFailed(f"model {name!r} could not be loaded: {reasons or 'no versions'}")

    async def unload(self, name: str) -> None:
        """Explicit mode: stop serving every version of `name`; returns once they are freed."""
        self._require_explicit("unload")
        async with self._lock:
            served = self.registry.models().get(name)
            if not served:
                if self.index.of(name):
                    return  # already unloaded: nothing to do, as Triton answers
                raise NoSuchModel(f"no model named {name!r}")
            if name == self.registry.default:
                raise DefaultModelRequired(
                    f"{name!r} is the default model (CONVSERVE_DEFAULT_MODEL): unloading it "
                    "would fail every request that names no model; load a new version instead"
                )
            self._unloaded.add(name)
            tasks = [self._unpublish(name, v, State.UNAVAILABLE, "unloaded") for v in served]
            del served
            await asyncio.gather(*[t for t in tasks if t is not None])

    def start(self) -> None:
        """Poll mode: start polling the model directory (on the running loop)."""
        if self.mode == "poll" and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._run())
            log.info("polling %s every %.1f s for new model versions", self.scanner.model_dir,
                     self.poll_s)  # fmt: skip

    async def _run(self) -> None:
        """The poll loop: runs until cancelled; a failing pass is logged, the next one runs."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except Exception:
                log.exception("model directory poll failed; retrying in %.1f s", self.poll_s)

    async def close(self) -> None:
        """Shutdown: stop polling, wait for versions still being retired."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await self._publisher.wait()

    def _require_explicit(self, what: str) -> None:
        if self.mode != "explicit":
            raise ControlDisabled(
                f"{what} requests need CONVSERVE_MODEL_CONTROL=explicit; this server runs "
                f"model_control={self.mode}"
                + (" and picks up the model directory by itself" if self.mode == "poll" else "")
            )

    # ---- syncing one model ----------------------------------------------
    async def _sync(self, name: str, found: dict[str, Candidate], *, explicit: bool) -> None:
        if name in self._unloaded:
            for version, cand in found.items():
                self.index.set(name, version, State.UNAVAILABLE, cand.reason or "unloaded")
            return
        for version in sorted(found, key=int, reverse=True):  # the new default first
            cand = found[version]
            key = (name, version)
            is_served = version in self.registry.models().get(name, {})
            if not cand.valid:
                if is_served:
                    self.index.set(
                        name,
                        version,
                        State.READY,
                        f"the files on disk changed and are not valid ({cand.reason}); "
                        "still serving the copy loaded earlier",
                    )
                else:
                    self.index.set(name, version, State.UNAVAILABLE, cand.reason)
                self._count_invalid(cand, settled=explicit)
                continue
            if is_served and self._loaded.get(key) == cand.fingerprint:
                self.index.set(name, version, State.READY)
                continue
            if not explicit and self._failed.get(key) == cand.fingerprint:
                continue  # the same bytes failed before: the index keeps the reason
            await self._load_one(cand)
        gone = [v for v in self.registry.models().get(name, {}) if v not in found]
        keep = self._last_default_version(name, gone)
        for version in gone:
            if version == keep:
                self.index.set(
                    name,
                    version,
                    State.READY,
                    "its directory was removed, but it is the default model's only version: "
                    "still serving it",
                )
            else:
                self._unpublish(name, version, None, "")
        served = self.registry.models().get(name, {})
        for key in [k for k in self.index.versions() if k[0] == name and k[1] not in found]:
            if key[1] not in served and self.index.state(*key) is not State.UNLOADING:
                self.index.drop(*key)  # neither on disk nor served (nor still draining)

    def _count_invalid(self, cand: Candidate, *, settled: bool) -> None:
        """Count an invalid version as a load failure once its files have not changed for
        `settle_s` (or at an explicit load): a copy in progress is not a failure, a corrupt
        or abandoned one is, once."""
        key = (cand.name, cand.version)
        fingerprint, since, counted = self._invalid.get(key, (None, 0.0, False))
        now = time.monotonic()
        if fingerprint != cand.fingerprint:
            fingerprint, since, counted = cand.fingerprint, now, False
        if not counted and (settled or now - since >= self.settle_s):
            counted = True
            if self._metrics is not None:
                self._metrics.failed(cand.name)
            log.error("%s version %s is not served: %s", cand.name, cand.version, cand.reason)
        self._invalid[key] = (fingerprint, since, counted)

    def _last_default_version(self, name: str, gone: list[str]) -> str | None:
        """The version kept when a removal would leave the default model with none."""
        served = self.registry.models().get(name, {})
        if name != self.registry.default or not gone or set(served) - set(gone):
            return None
        return max(gone, key=int)

    async def _load_one(self, cand: Candidate) -> None:
        name, version = cand.name, cand.version
        self.index.set(name, version, State.LOADING)
        started = time.monotonic()
        try:
            model = await asyncio.to_thread(self._load, cand)
        except Exception as exc:
            reason = f"load failed: {exc}"
            self._failed[(name, version)] = cand.fingerprint
            served = version in self.registry.models().get(name, {})
            if served:
                reason += "; still serving the copy loaded earlier"
            self.index.set(name, version, State.READY if served else State.UNAVAILABLE, reason)
            if self._metrics is not None:
                self._metrics.failed(name)
            log.error("%s version %s: %s", name, version, reason)
            return
        old = self._publisher.publish(name, version, model)
        del model
        self._loaded[(name, version)] = cand.fingerprint
        self._failed.pop((name, version), None)
        self.index.set(name, version, State.READY)
        if self._metrics is not None:
            self._metrics.loads.labels(name).inc()
        log.info(
            "%s version %s loaded and warmed up in %.2f s; serving %s version %s by default",
            name,
            version,
            time.monotonic() - started,
            name,
            max(self.registry.models()[name], key=int),
        )
        if old is not None:  # the same version reloaded: free the copy it replaced
            self._publisher.retire([old], None, "")
            del old

    def _unpublish(
        self, name: str, version: str, state: State | None, reason: str
    ) -> asyncio.Task | None:
        """Stop handing `version` out now; drain and free it in the background."""
        self._loaded.pop((name, version), None)
        return self._publisher.unpublish(name, version, state, reason)


def _plain_name(name: str) -> bool:
    """One directory name under model_dir: no separators, not '.', '..' or hidden."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name
