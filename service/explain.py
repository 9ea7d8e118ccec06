"""Occlusion sensitivity (Zeiler & Fergus 2014): which parts of the image the answer needs.

A square patch of `window` pixels slides with `stride` over the image *as the
model sees it* (after preprocessing); each position gives one occluded copy.
The map is the drop of the chosen label's probability, each pixel getting the
mean drop over every patch that covered it, so the map has the input's size
and can be laid over it. Knows neither HTTP nor onnxruntime: `occlusion()`
takes an async `infer(batch) -> probabilities` and hands it chunks of at most
`chunk` rows, a few at a time, so a large request neither floods the batcher's
queue nor holds more than a few chunks of copies in memory.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Fill = Literal["mean", "zero", "constant"]
FILLS: tuple[str, ...] = ("mean", "zero", "constant")
METHODS: tuple[str, ...] = ("occlusion",)
INLINE_COPY_BYTES = 1 << 20  # larger chunks of copies are made off the event loop
Infer = Callable[[np.ndarray], Awaitable[np.ndarray]]  # (N, H, W, C) -> (N, classes)


class ExplainError(ValueError):
    """Parameters that cannot describe an occlusion of this image (the route answers 422)."""


def default_window(height: int, width: int) -> int:
    """A quarter of the shorter side: 8 px on 32x32, 56 px on 224x224.

    Measured on the digits model (tests/service/test_explain_meaning.py): an
    8 px patch hides a stroke segment, so the drop is clear; 4 px patches mostly
    leave the digit readable and the map is noise-level.
    """
    return max(1, round(min(height, width) / 4))


def default_stride(window: int) -> int:
    """Half the window: every pixel is covered by up to four patches (7 x 7 positions)."""
    return max(1, window // 2)


def positions(size: int, window: int, stride: int) -> list[int]:
    """Patch offsets along one axis; the last patch always touches the far edge."""
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] != size - window:
        offsets.append(size - window)
    return offsets


@dataclass(frozen=True)
class Plan:
    """Where the patches go on an H x W image."""

    height: int
    width: int
    window: int
    stride: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def patch(self, k: int) -> tuple[int, int]:
        """(y, x) of the k-th patch, row-major."""
        return self.ys[k // len(self.xs)], self.xs[k % len(self.xs)]


def plan(
    height: int,
    width: int,
    window: int | None = None,
    stride: int | None = None,
    *,
    max_variants: int | None = None,
) -> Plan:
    """Patch positions for an H x W input; defaults from the input size. ExplainError."""
    window = default_window(height, width) if window is None else window
    if window < 1:
        raise ExplainError(f"window must be at least 1 pixel, not {window}")
    if window > min(height, width):
        raise ExplainError(
            f"window {window} is larger than the image the model sees ({height} x {width})"
        )
    stride = default_stride(window) if stride is None else stride
    if stride < 1:
        raise ExplainError(f"stride must be at least 1 pixel, not {stride}")
    if stride > window:  # pixels between patches would have no score (NaN in the map)
        raise ExplainError(
            f"stride {stride} is larger than the window {window}: pixels between the "
            "patches would get no score; use a stride of at most the window"
        )
    result = Plan(
        height,
        width,
        window,
        stride,
        tuple(positions(height, window, stride)),
        tuple(positions(width, window, stride)),
    )
    if max_variants is not None and result.count > max_variants:
        raise ExplainError(
            f"window {window} with stride {stride} makes {result.count} occluded images; "
            f"the limit is {max_variants} per request: use a larger stride or window"
        )
    return result


def check_fill(fill: str, constant: float | None) -> None:
    """ExplainError unless `fill` names a fill and `constant` comes with fill=constant only."""
    if fill not in FILLS:
        raise ExplainError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    if fill == "constant" and (constant is None or not math.isfinite(constant)):
        raise ExplainError("fill=constant needs a finite fill_value (in model-input units)")
    if fill != "constant" and constant is not None:
        raise ExplainError(f"fill_value is for fill=constant, not fill={fill}")


def fill_values(image: np.ndarray, fill: str, constant: float | None = None) -> np.ndarray:
    """The patch's value per channel, in model-input units (after preprocessing)."""
    check_fill(fill, constant)
    if fill == "mean":
        return image.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
    value = 0.0 if fill == "zero" else constant
    return np.full(image.shape[-1], value, dtype=np.float32)


def variants(image: np.ndarray, where: Plan, fill: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Occluded copies of `image` (H, W, C) for patches start..stop-1."""
    out = np.repeat(image[np.newaxis], stop - start, axis=0)
    w = where.window
    for row, k in enumerate(range(start, stop)):
        y, x = where.patch(k)
        out[row, y : y + w, x : x + w, :] = fill
    return out


def drop_map(where: Plan, base: float, occluded: np.ndarray) -> np.ndarray:
    """(H, W) float32: mean over covering patches of `base - occluded[k]`."""
    total = np.zeros((where.height, where.width), dtype=np.float64)
    covered = np.zeros_like(total)
    w = where.window
    for k, probability in enumerate(np.asarray(occluded, dtype=np.float64)):
        y, x = where.patch(k)
        total[y : y + w, x : x + w] += base - probability
        covered[y : y + w, x : x + w] += 1
    return (total / covered).astype(np.float32)  # every pixel is covered (positions())


@dataclass(frozen=True)
class Explanation:
    label: int  # class index
    probability: float  # of `label` on the unoccluded image
    plan: Plan
    heatmap: np.ndarray  # (H, W) float32, drop of the label's probability
    probabilities: np.ndarray  # (classes,) the unoccluded image's answer


async def occlusion(
    infer: Infer,
    image: np.ndarray,
    where: Plan,
    fill: np.ndarray,
    *,
    label: int | None = None,
    chunk: int = 32,
    in_flight: int = 4,
) -> Explanation:
    """Run the image and its occluded copies through `infer`, in chunks of <= `chunk` rows.

    The unoccluded image rides along as row 0 of the first chunk (no extra
    round trip); `label` None means its top label. At most `in_flight` chunks
    are submitted at once; when one fails (e.g. the deadline) or the caller is
    cancelled, the others are cancelled too (their queued rows never run).
    """
    chunk = max(1, chunk)
    bounds = [(0, min(chunk - 1, where.count))]  # first chunk: original + chunk-1 copies
    bounds += [(s, min(s + chunk, where.count)) for s in range(bounds[0][1], where.count, chunk)]
    gate = asyncio.Semaphore(max(1, in_flight))

    async def run(index: int, start: int, stop: int) -> np.ndarray:
        async with gate:
            if image.nbytes * (stop - start) > INLINE_COPY_BYTES:  # e.g. 32 x 224x224x3
                batch = await asyncio.to_thread(variants, image, where, fill, start, stop)
            else:
                batch = variants(image, where, fill, start, stop)
            if index == 0:
                batch = np.concatenate([image[np.newaxis], batch])
            return np.asarray(await infer(batch))

    tasks = [asyncio.ensure_future(run(i, s, e)) for i, (s, e) in enumerate(bounds)]
    try:
        parts = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    probs = np.concatenate(parts)
    original, occluded = probs[0], probs[1:]
    chosen = int(np.argmax(original)) if label is None else label
    base = float(original[chosen])
    heat = drop_map(where, base, occluded[:, chosen])
    return Explanation(chosen, base, where, heat, original)
