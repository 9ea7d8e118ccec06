"""A served model (bundle + engine + batcher) and the registry that resolves names.

This is the interface every route uses: `registry.resolve(name, version)`
gives a `ServedModel`; `await model.decode(blobs)` turns uploads into the
model's input batch in the decode thread pool, bit-exactly as training did;
`await model.infer(batch, outputs)` runs it through the dynamic batcher.
Both raise `APIError` with the right status, so routes only translate HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from functools import cached_property
from pathlib import Path

import numpy as np

from service.batcher import Batcher, BatchFailed, DeadlineExceeded, QueueFull
from service.bundle import FILTERS_FILE, MODEL_FILE, PROBABILITIES_OUTPUT, Bundle
from service.engine import Engine
from service.errors import (
    APIError,
    ImageTooLarge,
    InferenceFailed,
    InvalidImage,
    InvalidShape,
    NoImages,
    Overloaded,
    Timeout,
    UnknownModel,
    UnknownOutput,
    UnknownVersion,
)
from service.preprocess import ImageError, ImageTooLargeError, preprocess

INLINE_MAX_BYTES = 16 * 1024


class ServedModel:
    """One version of one model, ready to decode and infer."""

    def __init__(
        self,
        name: str,
        version: str,
        path: Path,
        bundle: Bundle,
        engine: Engine,
        batcher: Batcher,
        decode_pool: Executor,
        *,
        max_pixels: int,
        request_timeout_s: float,
        inline_max_pixels: int = 0,
    ) -> None:
        self.name = name
        self.version = version
        self.versions: list[str] = [version]  # filled in by the registry
        self.path = path
        self.bundle = bundle
        self.engine = engine
        self.batcher = batcher
        self.provider = engine.provider
        self.decode_pool = decode_pool
        self._max_pixels = max_pixels
        self._timeout = request_timeout_s
        self._inline_pixels = min(inline_max_pixels, max_pixels)
        spec = bundle.input
        self.input_shape = (spec.height, spec.width, spec.channels)
        self.layers = {f.name: f for f in bundle.feature_maps}

    # ---- decoding -------------------------------------------------------
    def _decode_into(self, out: np.ndarray, start: int, blobs: Sequence[bytes]) -> None:
        spec, prep = self.bundle.input, self.bundle.preprocessing
        for i, data in enumerate(blobs):
            try:
                out[start + i] = preprocess(data, spec, prep, max_pixels=self._max_pixels)
            except ImageError as exc:
                exc.index = start + i  # which upload, for the message
                raise

    async def decode(
        self, blobs: Sequence[bytes], names: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """Encoded images -> (N, H, W, C) float32 in the decode pool; APIError 400/413."""
        if not blobs:
            raise NoImages("the request contains no images")
        if len(blobs) == 1 and len(blobs[0]) <= INLINE_MAX_BYTES and self._inline_pixels:
            inline = self._decode_inline(blobs[0])
            if inline is not None:
                return inline
        loop = asyncio.get_running_loop()
        out = np.empty((len(blobs), *self.input_shape), dtype=np.float32)
        self.batcher.announce()
        try:
            if len(blobs) == 1:
                await loop.run_in_executor(self.decode_pool, self._decode_into, out, 0, blobs)
            else:
                step = -(-len(blobs) // min(len(blobs), _pool_size(self.decode_pool)))
                await asyncio.gather(
                    *(
                        loop.run_in_executor(
                            self.decode_pool, self._decode_into, out, i, blobs[i : i + step]
                        )
                        for i in range(0, len(blobs), step)
                    )
                )
        except ImageError as exc:
            raise _image_error(exc, len(blobs), names) from None
        finally:
            self.batcher.withdraw()
        return out

    def _decode_inline(self, data: bytes) -> np.ndarray | None:
        """A tiny image on the event loop (tens of microseconds); None when it is not tiny.

        The pixel cap is checked from the header before decoding, so an image over
        it costs only the header parse before it goes to the pool.
        """
        bundle = self.bundle
        try:
            x = preprocess(data, bundle.input, bundle.preprocessing, max_pixels=self._inline_pixels)
        except ImageTooLargeError as exc:
            if self._inline_pixels < self._max_pixels:
                return None  # larger than tiny, maybe within the limit: the pool decides
            raise _image_error(exc, 1, None) from None
        except ImageError as exc:
            raise _image_error(exc, 1, None) from None
        return x[np.newaxis]

    # ---- inference ------------------------------------------------------
    async def infer(
        self,
        batch: np.ndarray,
        outputs: Sequence[str] = (PROBABILITIES_OUTPUT,),
        *,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows of `batch` through the batcher; name -> (N, ...) arrays. APIError 503/504/500."""
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise InvalidShape(
                f"model {self.name} takes N x {' x '.join(map(str, self.input_shape))} "
                f"images, not {' x '.join(map(str, batch.shape))}",
            )
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        for name in outputs:
            if name != PROBABILITIES_OUTPUT and name not in self.layers:
                raise UnknownOutput(self.unknown_layer_message(name))
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        try:
            return await self.batcher.submit(batch, outputs, deadline)
        except QueueFull as exc:
            raise Overloaded(f"the server is busy: {exc}; retry shortly") from None
        except DeadlineExceeded as exc:
            raise Timeout(f"{exc} (request timeout {self._timeout:g} s)") from None
        except BatchFailed as exc:
            raise InferenceFailed(str(exc)) from None

    def unknown_layer_message(self, name: str) -> str:
        known = ", ".join(self.layers) or "none"
        return f"model {self.name} version {self.version} has no layer {name!r}; layers: {known}"

    # ---- filters --------------------------------------------------------
    @cached_property
    def filters(self) -> dict[str, np.ndarray]:
        """filters.npz (kh x kw x in x out per Conv2D layer), empty when absent."""
        path = self.path / FILTERS_FILE
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def metadata(self) -> dict:
        """The /models/{name} document."""
        b = self.bundle
        return {
            "name": self.name,
            "version": self.version,
            "versions": self.versions,
            "provider": self.provider,
            "padded_batch_sizes": self.engine.padded_sizes,
            "classes": b.classes,
            "input": b.input.model_dump(),
            "preprocessing": b.preprocessing.model_dump(),
            "feature_maps": [
                {**f.model_dump(exclude_none=True), "has_filters": f.name in self.filters}
                for f in b.feature_maps
            ],
            "metrics": b.metrics.model_dump(exclude_none=True),
            "parity": b.parity,
            "created": b.created.isoformat(),
            "tools": b.tools,
            "sha256": b.sha256,
            "model_file": str(self.path / MODEL_FILE),
        }


def _pool_size(pool: Executor) -> int:
    return max(1, getattr(pool, "_max_workers", 1))


def _image_error(exc: ImageError, count: int, names: Sequence[str | None] | None) -> APIError:
    message = str(exc)
    index = getattr(exc, "index", None)
    if count > 1 and index is not None:
        label = names[index] if names and names[index] else None
        message = f"image {index}{f' ({label})' if label else ''}: {message}"
    return (ImageTooLarge if isinstance(exc, ImageTooLargeError) else InvalidImage)(message)


class Registry:
    """Every served model by name and version; the default name from the settings."""

    def __init__(self, models: dict[str, dict[str, ServedModel]], default: str) -> None:
        self._models = models
        self.default = default
        for versions in models.values():
            ordered = sorted(versions, key=int)
            for model in versions.values():
                model.versions = ordered
        self._latest = {name: versions[max(versions, key=int)] for name, versions in models.items()}

    def names(self) -> list[str]:
        return list(self._models)

    def latest(self) -> list[ServedModel]:
        return list(self._latest.values())

    def all(self) -> list[ServedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model; the latest version unless `version` is given. APIError 404."""
        name = name or self.default
        versions = self._models.get(name)
        if versions is None:
            raise UnknownModel(f"no model named {name!r}; models: {', '.join(self._models)}")
        if version is None or version == "":
            return self._latest[name]
        model = versions.get(version.lstrip("0") or "0") if version.isdigit() else None
        if model is None:
            raise UnknownVersion(
                f"model {name!r} has no version {version!r}; "
                f"versions: {', '.join(sorted(versions, key=int))}",
            )
        return model
