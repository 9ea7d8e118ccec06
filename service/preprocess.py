"""Image bytes -> the exact float32 array Keras' training pipeline fed the model.

Training reads images with the legacy `ImageDataGenerator.flow_from_directory`
pipeline of Keras 3.15: `keras.utils.load_img` -> `img_to_array` ->
`ImageDataGenerator.standardize`. This module repeats those steps with the same
Pillow and numpy calls in the same order and dtypes, so the server's array is
bit-for-bit the one the model saw in training (tests/service/test_preprocess_parity.py
checks it against Keras itself). numpy + Pillow only: the server never imports
TensorFlow or Keras.

Deliberate choices, each because Keras does (or does not do) the same:

- No EXIF transpose: `load_img` ignores the orientation tag, so a rotated phone
  photo was trained as stored; "fixing" it here would break parity.
- No `Image.draft()` / reduce-on-load for JPEG: Keras decodes at full size.
- The first frame only for animated GIF/WebP/TIFF, as `load_img` does.
- Arithmetic stays float32 throughout (`x *= rescale` with a float32 array and a
  Python float is a float32 multiply under numpy's NEP 50), which is why
  `x / 255.0` (a float64 divide rounded back) is *not* the same number.
- `ImageFile.LOAD_TRUNCATED_IMAGES` is never enabled: a truncated upload is an
  error (HTTP 400), not an image padded with grey.

Differences from Keras on purpose (for untrusted input only): the pixel count is
checked from the header before any decoding (decompression bombs), so are the
JPEG scan and PNG chunk counts (service/image_limits.py: CPU bombs), and every
Pillow failure becomes an `ImageError` with a clear message instead of a crash.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.bundle import InputSpec, Preprocessing
from service.image_limits import too_costly

__all__ = [
    "ALLOWED_FORMATS",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "open_image",
    "preprocess",
    "standardize",
    "to_model_array",
]

# Keras' PIL_INTERPOLATION_METHODS (keras/src/utils/image_utils.py).
_RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

# Containers the server decodes: what users upload, via Pillow's bundled codecs.
# (JPEG includes MPO, the multi-picture JPEG many phones write.) Everything else
# Pillow could open - EPS, which runs Ghostscript; PSD, ICNS, FITS and friends - is
# refused before its parser runs: attack surface an upload endpoint does not need.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "AVIF")

# Modes load_img keeps as they are for color_mode="grayscale".
_GRAYSCALE_KEEP = ("L", "I;16", "I")
_TARGET_MODE = {"rgb": "RGB", "rgba": "RGBA"}
# Modes whose conversion to L/RGB/RGBA maps each pixel on its own (no dithering,
# no neighbourhood): resizing with "nearest" before converting changes nothing.
_PER_PIXEL_SOURCE_MODES = frozenset({"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "L", "LA", "P", "PA"})


class ImageError(ValueError):
    """An upload that cannot become a model input; `.code` is the API error code."""

    code = "invalid_image"


class ImageDecodeError(ImageError):
    """Undecodable, truncated or unsupported image (HTTP 400)."""

    code = "invalid_image"


class ImageTooLargeError(ImageError):
    """More pixels than the server allows (HTTP 413)."""

    code = "image_too_large"


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open and fully decode `data`, refusing oversized images before decoding.

    `Image.open` reads only the header, so the size check costs nothing and a
    decompression bomb is never inflated. `load()` then decodes now, so that a
    truncated or corrupt file fails here with a clear error, not later.
    """
    if not data:
        raise ImageDecodeError("empty image: no bytes were sent")
    if (why := too_costly(data)) is not None:  # scan and chunk floods: CPU, not memory
        raise ImageTooLargeError(f"image refused: {why}")
    try:
        img = Image.open(io.BytesIO(data), formats=_open_formats())
    except _BOMB as exc:  # beyond Pillow's own limit (the warning only when warnings are errors)
        raise _bomb_error(exc, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "cannot identify image file: not an image in a supported format "
            f"({', '.join(_open_formats())})"
        ) from exc
    except Exception as exc:  # any parser failure on untrusted bytes is bad input
        raise ImageDecodeError(f"cannot read image header: {_describe(exc)}") from exc
    try:
        _check_pixels(img.size, max_pixels)
        _decode(img, max_pixels)
        _check_pixels(img.size, max_pixels)  # defensive: the decoded size is what counts
    except BaseException:
        img.close()
        raise
    return img


def _decode(img: Image.Image, max_pixels: int) -> None:
    try:
        img.load()
    except _BOMB as exc:
        raise _bomb_error(exc, max_pixels) from exc
    except Exception as exc:
        fmt = img.format or "image"
        raise ImageDecodeError(f"cannot decode {fmt} data: {_describe(exc)}") from exc


_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _bomb_error(exc: BaseException, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image refused as a decompression bomb (the limit is {max_pixels} pixels): {exc}"
    )


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """ALLOWED_FORMATS that this Pillow build can open (AVIF needs libavif)."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _target_mode(img: Image.Image, spec: InputSpec) -> str:
    """The mode load_img converts `img` to (its own mode when it keeps it)."""
    if spec.color_mode == "grayscale":
        return img.mode if img.mode in _GRAYSCALE_KEEP else "L"
    return _TARGET_MODE[spec.color_mode]


def _load_img_transform(img: Image.Image, spec: InputSpec, prep: Preprocessing) -> Image.Image:
    """Mode conversion, optional centre crop and resize, exactly as keras.utils.load_img.

    load_img converts, then resizes. With "nearest" and a smaller target the
    resize comes first here: nearest picks source pixels by position alone and
    these conversions map each pixel by itself, so the array is the same, and
    only the target's pixels are converted (a 640x480 photo for a 256x256
    grayscale model: 210 -> 71 µs for both steps).
    """
    mode = _target_mode(img, spec)
    width_height = (spec.width, spec.height)
    if (
        mode != img.mode
        and prep.interpolation == "nearest"
        and img.mode in _PER_PIXEL_SOURCE_MODES
        and spec.width * spec.height < img.width * img.height
    ):
        return _resize(img, width_height, prep).convert(mode)
    if mode != img.mode:
        img = img.convert(mode)
    return _resize(img, width_height, prep)


def _resize(img: Image.Image, width_height: tuple[int, int], prep: Preprocessing) -> Image.Image:
    """load_img's resize, with its centre crop when `keep_aspect_ratio`."""
    if img.size == width_height:
        return img
    resample = _RESAMPLE[prep.interpolation]
    if not prep.keep_aspect_ratio:
        return img.resize(width_height, resample)
    width, height = img.size
    target_width, target_height = width_height
    crop_height = min(height, (width * target_height) // target_width)
    crop_width = min(width, (height * target_width) // target_height)
    left = (width - crop_width) // 2
    top = (height - crop_height) // 2
    box = (left, top, left + crop_width, top + crop_height)
    return img.resize(width_height, resample, box=box)


def to_model_array(img: Image.Image, spec: InputSpec, prep: Preprocessing) -> np.ndarray:
    """A decoded image -> H x W x C float32, standardized as training did."""
    try:
        img = _load_img_transform(img, spec, prep)
        # img_to_array: one copy, straight to float32 (as keras.backend.floatx()).
        x = np.asarray(img, dtype=np.float32)
    except ImageError:
        raise
    except Exception as exc:  # e.g. a mode Pillow cannot convert or resize
        raise ImageDecodeError(
            f"unsupported image (mode {img.mode!r}) for a {spec.color_mode} model: {_describe(exc)}"
        ) from exc
    if x.ndim == 2:
        x = x.reshape(x.shape[0], x.shape[1], 1)
    if x.shape != (spec.height, spec.width, spec.channels):
        raise ImageDecodeError(
            f"image of mode {img.mode!r} gives an array of shape {x.shape}, "
            f"not {(spec.height, spec.width, spec.channels)}"
        )
    if not x.flags.writeable:  # only if numpy could hand out a view; keeps in-place ops safe
        x = x.copy()
    return standardize(x, prep)


def standardize(x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """ImageDataGenerator.standardize, in place and in Keras' order, on float32 `x`.

    Featurewise `mean`/`std` are used as float32 arrays, which is what
    `ImageDataGenerator.fit()` stores; `std + 1e-6` is therefore a float32 add,
    as in Keras.
    """
    if prep.rescale:
        x *= prep.rescale
    if prep.samplewise_center:
        x -= np.mean(x, keepdims=True)
    if prep.samplewise_std_normalization:
        x /= np.std(x, keepdims=True) + 1e-6
    if prep.featurewise_center and prep.mean is not None:
        x -= _channel_stats(prep.mean, x)
    if prep.featurewise_std_normalization and prep.std is not None:
        x /= _channel_stats(prep.std, x) + 1e-6
    return x


def _channel_stats(values: list[float], x: np.ndarray) -> np.ndarray:
    stats = np.asarray(values, dtype=np.float32)
    channels = x.shape[-1]
    if stats.size not in (1, channels):
        raise ValueError(f"featurewise statistics have {stats.size} values for {channels} channels")
    return stats.reshape(1, 1, stats.size)


def preprocess(data: bytes, spec: InputSpec, prep: Preprocessing, *, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> the model's H x W x C float32 input."""
    img = open_image(data, max_pixels=max_pixels)
    try:
        return to_model_array(img, spec, prep)
    finally:
        img.close()
