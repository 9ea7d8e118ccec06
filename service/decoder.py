"""Encoded uploads -> a model's input batch, for every model: one decode pool, tiny ones inline.

Decoding is bit-exact with training (service/preprocess.py). One thread pool
serves all models; a single tiny upload is decoded on the event loop, where it
costs less than the thread hop. Image failures become the API's errors here
(InvalidImage 400, ImageTooLarge 413, naming the image within a batch). Knows
neither HTTP nor the batcher.

A deadline covers decoding: a request stops waiting at its deadline (Timeout)
even while a pool thread still decodes its image. A thread cannot be stopped
mid-image (service/image_limits.py bounds what one image costs), so its result
is dropped; jobs not yet started never start, and a multi-image job stops
before its next image.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from service.bundle import Bundle
from service.errors import APIError, ImageTooLarge, InvalidImage, NoImages, Timeout
from service.image_limits import auto_max_pixels, cheap_to_decode
from service.preprocess import ImageError, ImageTooLargeError, preprocess

INLINE_MAX_BYTES = 16 * 1024
_EXPIRED = "the request's deadline passed while its images were decoding"
T = TypeVar("T")


def usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset or taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Decoder:
    """The decode pool and the pixel limits; `decode` for any model's bundle."""

    def __init__(
        self,
        threads: int = 0,
        *,
        max_pixels: int,
        inline_max_pixels: int = 0,
        timeout_s: float | None = None,
    ) -> None:
        # 0: one more thread than CPUs: while one waits for the GIL (held by the event
        # loop), the others keep every core decoding (+13% images/s measured on 2 cores).
        threads = threads or usable_cpus() + 1
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="convserve-decode")
        self._max_pixels = max_pixels  # 0: per model, from its input size
        self._inline_pixels = inline_max_pixels
        self._expired = _EXPIRED + (f" (request timeout {timeout_s:g} s)" if timeout_s else "")

    def max_pixels(self, bundle: Bundle) -> int:
        """The pixel cap for `bundle`'s model: the setting, or derived from its input."""
        return self._max_pixels or auto_max_pixels(bundle.input.height, bundle.input.width)

    def inline(
        self,
        bundle: Bundle,
        blobs: Sequence[bytes],
        *,
        max_bytes: int = INLINE_MAX_BYTES,
        max_pixels: int | None = None,
    ) -> np.ndarray | None:
        """A single tiny upload decoded right here (tens of microseconds); None otherwise.

        The pixel cap is checked from the header before decoding, so an image over
        it costs only the header parse before it goes to the pool. `max_bytes` and
        `max_pixels` raise the caps (for a request that is alone in the process).
        """
        cap = self.max_pixels(bundle)
        pixels = min(self._inline_pixels if max_pixels is None else max_pixels, cap)
        if len(blobs) != 1 or len(blobs[0]) > max_bytes or not pixels:
            return None
        if not cheap_to_decode(blobs[0]):  # the loop only decodes what cannot stall it
            return None
        try:
            x = preprocess(blobs[0], bundle.input, bundle.preprocessing, max_pixels=pixels)
        except ImageTooLargeError as exc:
            if pixels < cap:
                return None  # larger than tiny, maybe within the limit: the pool decides
            raise _image_error(exc, 1, None) from None
        except ImageError as exc:
            raise _image_error(exc, 1, None) from None
        return x[np.newaxis]

    async def decode(
        self,
        bundle: Bundle,
        blobs: Sequence[bytes],
        names: Sequence[str | None] | None = None,
        *,
        deadline: float | None = None,
    ) -> np.ndarray:
        """(N, H, W, C) float32 in the pool, split over its threads; NoImages/InvalidImage/...;
        Timeout at `deadline` (time.monotonic(); None: no deadline)."""
        if not blobs:
            raise NoImages("the request contains no images")
        self._check(deadline)
        spec = bundle.input
        out = np.empty((len(blobs), spec.height, spec.width, spec.channels), dtype=np.float32)
        loop = asyncio.get_running_loop()
        cap = self.max_pixels(bundle)
        stop = threading.Event()  # set when nobody waits any more: later images are skipped
        step = -(-len(blobs) // min(len(blobs), self.threads))
        jobs = [
            loop.run_in_executor(
                self.pool, _decode_into, bundle, out, i, blobs[i : i + step], cap, stop
            )
            for i in range(0, len(blobs), step)
        ]
        try:
            await self._within(jobs[0] if len(jobs) == 1 else asyncio.gather(*jobs), deadline)
        except ImageError as exc:
            raise _image_error(exc, len(blobs), names) from None
        finally:
            stop.set()
        return out

    async def decode_then(
        self,
        bundle: Bundle,
        blob: bytes,
        then: Callable[[np.ndarray], T],
        *,
        deadline: float | None = None,
    ) -> T:
        """One upload decoded to (1, H, W, C) and handed to `then`, in ONE pool job;
        Timeout at `deadline` (then `then` must check it itself before it does anything)."""
        self._check(deadline)
        spec = bundle.input
        out = np.empty((1, spec.height, spec.width, spec.channels), dtype=np.float32)

        def job() -> T:
            _decode_into(bundle, out, 0, [blob], self.max_pixels(bundle))
            return then(out)

        try:
            return await self._within(self.run(job), deadline)
        except ImageError as exc:
            raise _image_error(exc, 1, None) from None

    def deferred(
        self, bundle: Bundle, blobs: Sequence[bytes], names: Sequence[str | None] | None = None
    ) -> list[Callable[[], np.ndarray]]:
        """Each upload's decode to (1, H, W, C), as a call for another thread to make (the
        serial lane's inference thread, service/serial_lane.py); it raises the API's error."""
        cap = self.max_pixels(bundle)

        def loader(i: int) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                try:
                    x = preprocess(blobs[i], bundle.input, bundle.preprocessing, max_pixels=cap)
                except ImageError as exc:
                    exc.index = i
                    raise _image_error(exc, len(blobs), names) from None
                return x[np.newaxis]

            return load

        return [loader(i) for i in range(len(blobs))]

    def _check(self, deadline: float | None) -> None:
        if deadline is not None and deadline <= time.monotonic():
            raise Timeout(self._expired)

    async def _within(self, work: Awaitable[T], deadline: float | None) -> T:
        """`work`, or Timeout at `deadline`: the request stops waiting (a pool job that has
        not started is cancelled; one that runs finishes on its own, its result dropped)."""
        if deadline is None:
            return await work
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await work
        except TimeoutError:
            raise Timeout(self._expired) from None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Other CPU-heavy work (PNG encoding) in the same pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait)


def _decode_into(
    bundle: Bundle,
    out: np.ndarray,
    start: int,
    blobs: Sequence[bytes],
    max_pixels: int,
    stop: threading.Event | None = None,
) -> None:
    for i, data in enumerate(blobs):
        if stop is not None and stop.is_set():
            return  # the request gave up (deadline, client gone, another image failed)
        try:
            out[start + i] = preprocess(
                data, bundle.input, bundle.preprocessing, max_pixels=max_pixels
            )
        except ImageError as exc:
            exc.index = start + i  # which upload, for the message
            raise


def _image_error(exc: ImageError, count: int, names: Sequence[str | None] | None) -> APIError:
    message = str(exc)
    index = getattr(exc, "index", None)
    if count > 1 and index is not None:
        label = names[index] if names and names[index] else None
        message = f"image {index}{f' ({label})' if label else ''}: {message}"
    return (ImageTooLarge if isinstance(exc, ImageTooLargeError) else InvalidImage)(message)
