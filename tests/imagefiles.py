"""Real image files for the tests, written by Pillow, deterministic for a given seed.

`good_images()` covers every mode and container DESIGN.md lists (L, LA, P with
transparency, P GIF, RGB, RGBA, CMYK JPEG, 16-bit PNG, baseline and progressive
JPEG, BMP, WebP, TIFF, and a few more: 1-bit, 32-bit int and float TIFF, an
EXIF-rotated JPEG, an animated GIF), at sizes smaller and larger than a typical
model input, square and not. `bad_images()` is the corpus of uploads a server
must refuse cleanly (with the HTTP status each deserves). Content is gradients
plus seeded noise, so resampling filters and colour conversions have real work.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

__all__ = [
    "BadImage",
    "SampleImage",
    "bad_images",
    "good_images",
    "image_bytes",
    "png_bomb",
    "write_images",
]


@dataclass(frozen=True)
class SampleImage:
    """One encoded image file: `name` has the real extension; `mode` is what Pillow opens."""

    name: str
    data: bytes
    mode: str
    size: tuple[int, int]  # width, height as stored in the file

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


@dataclass(frozen=True)
class BadImage:
    """An upload a server must refuse: `status` 400 (undecodable) or 413 (too large)."""

    name: str
    data: bytes
    status: int
    content_type: str  # what a careless client would send it as


def _rng(seed: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(salt.encode())])


def _pixels(size: tuple[int, int], channels: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x channels uint8: per-channel gradients in different directions plus noise."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    bases = [u, v, (u + v) / 2, 1 - u * v]
    out = np.empty((height, width, channels), dtype=np.float64)
    for c in range(channels):
        out[..., c] = 255 * bases[c % 4] + rng.normal(0, 24, size=(height, width))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _gray(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(_pixels(size, 1, rng)[..., 0], "L")


def _color(size: tuple[int, int], rng: np.random.Generator, mode: str) -> Image.Image:
    return Image.fromarray(_pixels(size, len(mode), rng), mode)


def _palette(size: tuple[int, int], rng: np.random.Generator, colours: int) -> Image.Image:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    index = xx * colours // width + yy * 7 // height + rng.integers(0, 3, (height, width))
    img = Image.fromarray((index % colours).astype(np.uint8), "P")
    img.putpalette(rng.integers(0, 256, colours * 3, dtype=np.uint8).tobytes())
    return img


def _png_trns(size, rng):
    img = _palette(size, rng, 64)
    alpha = rng.integers(0, 256, 64, dtype=np.uint8)
    alpha[0] = 0
    return _encode(img, "PNG", transparency=alpha.tobytes())


def _gif(size, rng):
    return _encode(_palette(size, rng, 128), "GIF", transparency=3)


def _gif_animated(size, rng):
    frames = [_palette(size, rng, 32) for _ in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _i16(size, rng):
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = xx * 65535 // max(width - 1, 1) // 2 + yy * 65535 // max(height - 1, 1) // 2
    noise = rng.integers(-900, 900, (height, width))
    return _encode(Image.fromarray(np.clip(ramp + noise, 0, 65535).astype(np.uint16)), "PNG")


def _i32_tiff(size, rng):
    values = _pixels(size, 1, rng)[..., 0].astype(np.int32) * 70_001 - 3_000_000
    return _encode(Image.fromarray(values, "I"), "TIFF")


def _f32_tiff(size, rng):
    values = _pixels(size, 1, rng)[..., 0].astype(np.float32) / 7.0 - 3.25
    return _encode(Image.fromarray(values, "F"), "TIFF")


def _bilevel(size, rng):
    return _encode(_gray(size, rng).convert("1"), "PNG")


def _exif_rotated(size, rng):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; Keras ignores it
    return _encode(_color(size, rng, "RGB"), "JPEG", quality=90, exif=exif.tobytes())


def _mpo(size, rng):
    """Multi-picture JPEG, as many phone cameras write (Pillow opens it as MPO)."""
    first, second = _color(size, rng, "RGB"), _color(size, rng, "RGB")
    return _encode(first, "MPO", save_all=True, append_images=[second], quality=88)


# name -> (size, encoder). Sizes: smaller and larger than typical inputs, both orientations.
_GOOD: dict[str, tuple[tuple[int, int], Callable[..., bytes]]] = {
    "L.png": ((64, 48), lambda s, r: _encode(_gray(s, r), "PNG")),
    "LA.png": ((23, 37), lambda s, r: _encode(_color(s, r, "LA"), "PNG")),
    "P_transparency.png": ((120, 80), _png_trns),
    "P.gif": ((50, 50), _gif),
    "P_animated.gif": ((33, 21), _gif_animated),
    "RGB.png": ((300, 200), lambda s, r: _encode(_color(s, r, "RGB"), "PNG")),
    "RGBA.png": ((37, 61), lambda s, r: _encode(_color(s, r, "RGBA"), "PNG")),
    "CMYK.jpg": ((91, 40), lambda s, r: _encode(_color(s, r, "CMYK"), "JPEG", quality=92)),
    "I16.png": ((45, 77), _i16),
    "baseline.jpg": ((160, 120), lambda s, r: _encode(_color(s, r, "RGB"), "JPEG", quality=85)),
    "progressive.jpeg": (
        (77, 129),
        lambda s, r: _encode(_color(s, r, "RGB"), "JPEG", quality=80, progressive=True),
    ),
    "L.jpg": ((52, 19), lambda s, r: _encode(_gray(s, r), "JPEG", quality=75)),
    "exif_rotated.jpg": ((61, 30), _exif_rotated),
    "RGB.bmp": ((41, 29), lambda s, r: _encode(_color(s, r, "RGB"), "BMP")),
    "P.bmp": ((17, 11), lambda s, r: _encode(_palette(s, r, 16), "BMP")),
    "RGB.webp": ((96, 64), lambda s, r: _encode(_color(s, r, "RGB"), "WEBP", quality=70)),
    "RGBA.webp": (
        (31, 47),
        lambda s, r: _encode(_color(s, r, "RGBA"), "WEBP", lossless=True),
    ),
    "RGB.avif": ((44, 28), lambda s, r: _encode(_color(s, r, "RGB"), "AVIF", quality=60)),
    "phone.mpo.jpg": ((48, 36), _mpo),
    "RGB.tif": ((55, 33), lambda s, r: _encode(_color(s, r, "RGB"), "TIFF")),
    "I32.tif": ((26, 39), _i32_tiff),
    "F32.tif": ((29, 18), _f32_tiff),
    "bilevel.png": ((70, 45), _bilevel),
    "RGB.ppm": ((19, 25), lambda s, r: _encode(_color(s, r, "RGB"), "PPM")),
}

_FORMATS = {"RGB": "PNG", "RGBA": "PNG", "L": "PNG", "LA": "PNG", "CMYK": "JPEG", "LAB": "TIFF"}


def image_bytes(
    mode: str, size: tuple[int, int], *, seed: int = 0, fmt: str | None = None
) -> bytes:
    """One image of `mode` (L, LA, RGB, RGBA, CMYK, LAB) and `size` (width, height), encoded.

    LAB (a CIELab TIFF) is a real file Pillow opens but cannot convert to L: Keras
    fails on it for grayscale models, and the server must refuse it cleanly.
    """
    rng = _rng(seed, f"{mode}{size}")
    img = _gray(size, rng) if mode == "L" else _color(size, rng, mode)
    return _encode(img, fmt or _FORMATS[mode])


def good_images(seed: int = 0) -> list[SampleImage]:
    """Every supported mode/container, as real encoded files."""
    out = []
    for name, (size, encoder) in _GOOD.items():
        if name.endswith(".avif") and not features.check("avif"):
            continue  # Pillow built without libavif: the server cannot decode AVIF either
        data = encoder(size, _rng(seed, name))
        with Image.open(io.BytesIO(data)) as img:
            out.append(SampleImage(name, data, img.mode, img.size))
    return out


def write_images(
    directory: Path, images: list[SampleImage], *, prefix_index: bool = True
) -> list[Path]:
    """Write `images` into `directory` (created); names get an index prefix to fix their order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = directory / (f"{i:03d}_{image.name}" if prefix_index else image.name)
        path.write_bytes(image.data)
        paths.append(path)
    return paths


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(width: int = 30_000, height: int = 30_000, *, decodable_start: bool = True) -> bytes:
    """A tiny, well-formed PNG whose header declares `width` x `height` 8-bit grey pixels.

    Valid signature and CRCs. With `decodable_start` the IDAT holds the first few
    rows, zlib-compressed (the rest is missing); without it the IDAT is garbage, so
    any attempt to decode fails: a refusal as *too large* then proves that the
    size was checked from the header alone.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    first_rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    idat = first_rows if decodable_start else bytes(range(256)) * 2
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _truncate(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def bad_images(seed: int = 0) -> list[BadImage]:
    """Uploads that must be refused with a clear error: 400, or 413 for the bomb."""
    png = image_bytes("RGB", (80, 60), seed=seed)
    jpeg = image_bytes("RGB", (80, 60), seed=seed, fmt="JPEG")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # last byte of IHDR's CRC (8 signature + 8 + 13 data bytes)
    random_bytes = _rng(seed, "random").integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return [
        BadImage("empty.png", b"", 400, "image/png"),
        BadImage("random.bin", random_bytes, 400, "application/octet-stream"),
        BadImage("truncated.png", _truncate(png, 0.6), 400, "image/png"),
        BadImage("truncated.jpg", _truncate(jpeg, 0.6), 400, "image/jpeg"),
        BadImage("png_signature_only.png", png[:8], 400, "image/png"),
        BadImage("bad_crc.png", bytes(bad_crc), 400, "image/png"),
        # real images in containers the server does not decode (EPS would run Ghostscript)
        BadImage("image.tga", _encode(Image.open(io.BytesIO(png)), "TGA"), 400, "image/x-tga"),
        BadImage("image.eps", _encode(Image.open(io.BytesIO(png)), "EPS"), 400, "image/eps"),
        BadImage("text.txt", b"This is a text file, not an image.\n" * 4, 400, "text/plain"),
        BadImage("bomb.png", png_bomb(), 413, "image/png"),
    ]
