"""An occlusion map as a PNG: the map blended over the image as the model sees it.

Red where hiding the pixels lowers the label's probability, blue where it
raises it; the colour's strength follows the magnitude, so pixels that do not
matter show the image itself. The input is min-max scaled for display (it is
the preprocessed tensor, not the upload), the whole picture is upscaled with
nearest-neighbour to at least `MIN_SIDE` pixels (a 32 x 32 input by 8), and a
legend strip below gives the scale. Pillow + numpy only, no fonts to ship.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256
LEGEND_HEIGHT = 34
FONT_SIZE = 13
MAX_ALPHA = 0.75
RAISE = np.array([40, 90, 255], dtype=np.float64)  # occlusion raised the probability
LOWER = np.array([255, 40, 20], dtype=np.float64)  # occlusion lowered it (the evidence)


def display_image(image: np.ndarray) -> np.ndarray:
    """(H, W, C) model input -> (H, W, 3) float64 in 0..1 (grey or colour, min-max scaled)."""
    x = image.astype(np.float64)
    lo, span = x.min(), x.max() - x.min()
    x = (x - lo) / span if span > 0 else np.zeros_like(x)
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    return x[..., :3]


def _colours(values: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed values -> (RGB 0..255, alpha 0..MAX_ALPHA)."""
    v = np.clip(values / scale, -1, 1) if scale > 0 else np.zeros_like(values)
    rgb = np.where(v[..., np.newaxis] >= 0, LOWER, RAISE)
    return rgb, np.abs(v)[..., np.newaxis] * MAX_ALPHA


def blend(image: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 of the map over the image, and the scale (max |drop|) used."""
    scale = float(np.abs(heatmap).max()) if heatmap.size else 0.0
    base = display_image(image) * 255
    rgb, alpha = _colours(heatmap.astype(np.float64), scale)
    out = base * (1 - alpha) + rgb * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), scale


def _legend(width: int, scale: float, label: str) -> Image.Image:
    strip = Image.new("RGB", (width, LEGEND_HEIGHT), (255, 255, 255))
    ramp = np.linspace(-1, 1, width)[np.newaxis, :].repeat(10, axis=0)
    rgb, alpha = _colours(ramp, 1.0)
    bar = 255 * (1 - alpha) + rgb * alpha  # over white, as the map is over the image
    strip.paste(Image.fromarray(np.rint(bar).astype(np.uint8), "RGB"), (0, 0))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=FONT_SIZE)  # Pillow's bundled font: nothing to ship
    ink = (20, 20, 20)
    draw.text((2, 12), f"-{scale:.3g}", fill=ink, font=font)
    right = f"+{scale:.3g}"
    draw.text((width - 2 - draw.textlength(right, font=font), 12), right, fill=ink, font=font)
    middle = f"drop of P({label})"
    draw.text(((width - draw.textlength(middle, font=font)) / 2, 12), middle, fill=ink, font=font)
    return strip


def heatmap_png(image: np.ndarray, heatmap: np.ndarray, label: str) -> bytes:
    """The PNG the /explain route returns for format=png."""
    pixels, scale = blend(image, heatmap)
    h, w = heatmap.shape
    factor = max(1, math.ceil(MIN_SIDE / max(h, w)))
    picture = Image.fromarray(pixels, "RGB").resize((w * factor, h * factor), Image.NEAREST)
    canvas = Image.new("RGB", (picture.width, picture.height + LEGEND_HEIGHT), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(_legend(picture.width, scale, label), (0, picture.height))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
