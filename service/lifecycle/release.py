"""Retiring a model version: finish its queued work, then really free its session.

The registry has already stopped handing the version out. Requests that
resolved it just before still hold it, so the session is not closed by hand:
it is freed by Python when the last of them lets go, which this module waits
for (a weak reference to the engine) before handing the memory back to the
operating system. RSS then falls instead of creeping up over reloads.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import time
import weakref
from typing import Protocol

log = logging.getLogger("convserve.lifecycle")


class _Batcher(Protocol):
    async def drain(self) -> None: ...


class Retirable(Protocol):
    """What release() needs of a served model (service.models.ServedModel has it)."""

    name: str
    version: str
    batcher: _Batcher
    engine: object


async def release(holder: list[Retirable], *, timeout_s: float) -> bool:
    """Drain and free the model in `holder` (a one-item list, emptied here so that the
    caller keeps no reference); True when its engine was freed within `timeout_s`."""
    model = holder.pop()
    name, version = model.name, model.version
    started = time.monotonic()
    await model.batcher.drain()
    engine = weakref.ref(model.engine)
    del model
    deadline = started + timeout_s
    while True:
        gc.collect()
        if engine() is None:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "%s version %s: unloaded, but its onnxruntime session is still referenced "
                "after %.0f s; it is freed when the last request holding it ends",
                name,
                version,
                timeout_s,
            )
            return False
        await asyncio.sleep(0.05)
    trim_memory()
    log.info(
        "%s version %s: queued work finished, onnxruntime session freed (%.2f s)",
        name,
        version,
        time.monotonic() - started,
    )
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.malloc_trim  # noqa: B018 - glibc only; musl and macOS have none
    except (OSError, AttributeError):
        return None
    return lib


def trim_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim); a no-op elsewhere."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
