"""Feature maps and filters as PNG grids (Pillow + numpy only).

A grid has one tile per channel, `cols = ceil(sqrt(C))` columns and as many
rows as needed (16 channels -> 4 x 4). Each tile is scaled to its own min-max
(dark = low; a constant tile is black), upscaled by an integer factor with
nearest-neighbour so that small maps can be seen, and tiles are separated by a
thin mid-grey line.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

MIN_TILE = 64  # feature-map tiles are upscaled to at least this many pixels
MIN_FILTER_TILE = 24
SEPARATOR = 2
SEPARATOR_VALUE = 128


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, cols) for `count` tiles."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / cols), cols


def tile_scale(height: int, width: int, min_tile: int = MIN_TILE) -> int:
    return max(1, math.ceil(min_tile / max(height, width)))


def grid_size(count: int, height: int, width: int, min_tile: int = MIN_TILE) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `feature_map_png` makes for C tiles of H x W."""
    rows, cols = grid_shape(count)
    scale = tile_scale(height, width, min_tile)
    tw, th = width * scale, height * scale
    return cols * tw + (cols - 1) * SEPARATOR, rows * th + (rows - 1) * SEPARATOR


def _normalise(tiles: np.ndarray) -> np.ndarray:
    """(T, h, w) -> uint8, each tile to its own min-max."""
    tiles = tiles.astype(np.float64)
    lo = tiles.min(axis=(1, 2), keepdims=True)
    span = tiles.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.divide(tiles - lo, span, out=np.zeros_like(tiles), where=span > 0)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def _grid_png(tiles: np.ndarray, rows: int, cols: int, scale: int) -> bytes:
    count, h, w = tiles.shape
    tiles = _normalise(tiles)
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = h * scale, w * scale
    canvas = np.full(
        (rows * th + (rows - 1) * SEPARATOR, cols * tw + (cols - 1) * SEPARATOR),
        SEPARATOR_VALUE,
        dtype=np.uint8,
    )
    for i in range(count):
        r, c = divmod(i, cols)
        y, x = r * (th + SEPARATOR), c * (tw + SEPARATOR)
        canvas[y : y + th, x : x + tw] = tiles[i]
    buf = io.BytesIO()
    Image.fromarray(canvas, "L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def feature_map_png(activation: np.ndarray) -> bytes:
    """One image's H x W x C activations -> a PNG grid of its C channels."""
    if activation.ndim != 3:
        raise ValueError(f"expected H x W x C activations, got shape {activation.shape}")
    h, w, c = activation.shape
    rows, cols = grid_shape(c)
    return _grid_png(np.moveaxis(activation, -1, 0), rows, cols, tile_scale(h, w))


def filter_grid_shape(kernel_shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols): a square grid of output filters for one input channel, else out x in."""
    _, _, n_in, n_out = kernel_shape
    return grid_shape(n_out) if n_in == 1 else (n_out, n_in)


def filters_png(kernel: np.ndarray) -> bytes:
    """A Conv2D kernel (kh x kw x in x out, Keras layout) -> one tile per (out, in) pair."""
    if kernel.ndim != 4:
        raise ValueError(f"expected a kh x kw x in x out kernel, got shape {kernel.shape}")
    kh, kw, n_in, n_out = kernel.shape
    rows, cols = filter_grid_shape(kernel.shape)
    tiles = np.transpose(kernel, (3, 2, 0, 1)).reshape(n_out * n_in, kh, kw)
    return _grid_png(tiles, rows, cols, tile_scale(kh, kw, MIN_FILTER_TILE))


def filters_png_size(kernel_shape: tuple[int, ...]) -> tuple[int, int]:
    kh, kw, _, _ = kernel_shape
    rows, cols = filter_grid_shape(kernel_shape)
    scale = tile_scale(kh, kw, MIN_FILTER_TILE)
    return cols * kw * scale + (cols - 1) * SEPARATOR, rows * kh * scale + (rows - 1) * SEPARATOR
