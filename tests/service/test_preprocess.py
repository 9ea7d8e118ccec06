"""service.preprocess without Keras: refusals of bad uploads, limits, shapes, in-place behaviour.

Bit-for-bit agreement with Keras is test_preprocess_parity.py's job.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from service.bundle import InputSpec, Preprocessing
from service.preprocess import (
    _PER_PIXEL_SOURCE_MODES,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    open_image,
    preprocess,
    standardize,
    to_model_array,
)
from tests.imagefiles import bad_images, good_images, image_bytes, png_bomb

MAX_PIXELS = 40_000_000
RGB = InputSpec(height=24, width=40, channels=3, color_mode="rgb")

pytestmark = pytest.mark.filterwarnings(
    "ignore:Palette images with Transparency:UserWarning",
)


@pytest.mark.parametrize("bad", bad_images(), ids=lambda b: b.name)
def test_bad_uploads_are_refused_with_the_right_error(bad) -> None:
    expected = ImageTooLargeError if bad.status == 413 else ImageDecodeError
    with pytest.raises(expected) as caught:
        preprocess(bad.data, RGB, Preprocessing(rescale=1 / 255), max_pixels=MAX_PIXELS)
    error = caught.value
    assert isinstance(error, ImageError) and isinstance(error, ValueError)
    assert error.code == ("image_too_large" if bad.status == 413 else "invalid_image")
    assert str(error)  # a message a client can read
    assert "Traceback" not in str(error)


def test_formats_outside_the_allow_list_are_refused_before_parsing() -> None:
    """TGA and EPS files are real images Pillow could open (EPS via Ghostscript)."""
    refused = {b.name: b.data for b in bad_images() if b.name in ("image.tga", "image.eps")}
    assert len(refused) == 2
    for name, data in refused.items():
        with Image.open(io.BytesIO(data)) as img:  # unrestricted Pillow reads the header
            assert img.format in ("TGA", "EPS") and img.size == (80, 60), name
        with pytest.raises(ImageDecodeError, match="supported format"):
            open_image(data, max_pixels=MAX_PIXELS)


def test_truncated_files_stay_errors() -> None:
    """Pillow's LOAD_TRUNCATED_IMAGES would pad a cut-off upload with grey; never on."""
    truncated = next(b for b in bad_images() if b.name == "truncated.jpg")
    with pytest.raises(ImageDecodeError, match="truncated"):
        open_image(truncated.data, max_pixels=MAX_PIXELS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    """The IDAT is garbage: decoding it would fail, so 'too large' proves no decoding ran."""
    bomb = png_bomb(3000, 2000, decodable_start=False)
    assert len(bomb) < 1000
    with pytest.raises(ImageTooLargeError) as caught:
        open_image(bomb, max_pixels=5_000_000)
    assert "3000x2000" in str(caught.value) and "5000000" in str(caught.value)
    # At exactly the limit the header passes and the (broken) data is decoded: refused as bad.
    with pytest.raises(ImageDecodeError):
        open_image(bomb, max_pixels=6_000_000)


def test_hand_built_bomb_is_a_valid_png_header() -> None:
    """The 30000x30000 bomb's header parses (so it is refused for its size, not as garbage)."""
    with Image.open(io.BytesIO(png_bomb(300, 300))) as img:  # small twin, under Pillow's limit
        assert img.size == (300, 300) and img.mode == "L"
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        open_image(png_bomb(), max_pixels=MAX_PIXELS)
    # Under Pillow's own limit, ours decides.
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        open_image(png_bomb(8000, 8000), max_pixels=MAX_PIXELS)


def test_limit_counts_pixels_not_bytes() -> None:
    data = image_bytes("RGB", (40, 30))
    assert open_image(data, max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageTooLargeError):
        open_image(data, max_pixels=1199)


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb", "rgba"])
def test_every_good_file_gives_the_model_shape(color_mode: str) -> None:
    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}[color_mode]
    spec = InputSpec(height=24, width=40, channels=channels, color_mode=color_mode)
    prep = Preprocessing(rescale=1 / 255, interpolation="bilinear", keep_aspect_ratio=True)
    for image in good_images():
        x = preprocess(image.data, spec, prep, max_pixels=MAX_PIXELS)
        assert x.shape == (24, 40, channels) and x.dtype == np.float32, image.name
        assert x.flags.c_contiguous and x.flags.writeable, image.name
        assert np.isfinite(x).all(), image.name


def test_exif_orientation_is_ignored_as_keras_does() -> None:
    rotated = next(i for i in good_images() if i.name == "exif_rotated.jpg")
    img = open_image(rotated.data, max_pixels=MAX_PIXELS)
    assert img.getexif().get(0x0112) == 6
    assert img.size == rotated.size  # stored orientation, not the displayed one
    width, height = rotated.size
    spec = InputSpec(height=height, width=width, channels=3, color_mode="rgb")
    assert to_model_array(img, spec, Preprocessing()).shape == (height, width, 3)


def test_standardize_is_in_place_and_float32() -> None:
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    prep = Preprocessing(
        rescale=0.5,
        samplewise_center=True,
        featurewise_center=True,
        featurewise_std_normalization=True,
        mean=[0.0, 1.0, 2.0],
        std=[1.0, 2.0, 4.0],
    )
    out = standardize(x, prep)
    assert out is x and out.dtype == np.float32
    centred = np.arange(18, dtype=np.float32).reshape(2, 3, 3) * np.float32(0.5)
    centred -= centred.mean()
    want = (centred - np.float32([0, 1, 2])) / (np.float32([1, 2, 4]) + np.float32(1e-6))
    assert np.array_equal(out, want)


def test_featurewise_statistics_must_match_channels() -> None:
    prep = Preprocessing(featurewise_center=True, mean=[1.0, 2.0])
    with pytest.raises(ValueError, match="2 values for 3 channels"):
        standardize(np.zeros((4, 4, 3), np.float32), prep)


def test_unsupported_mode_for_the_model_is_a_decode_error() -> None:
    """A mode Pillow cannot convert to the model's colour mode: 400, not a crash."""
    lab = image_bytes("LAB", (30, 20), fmt="TIFF")
    assert open_image(lab, max_pixels=MAX_PIXELS).mode == "LAB"
    gray = InputSpec(height=24, width=40, channels=1, color_mode="grayscale")
    with pytest.raises(ImageDecodeError, match="mode 'LAB'"):
        preprocess(lab, gray, Preprocessing(), max_pixels=MAX_PIXELS)
    assert preprocess(lab, RGB, Preprocessing(), max_pixels=MAX_PIXELS).shape == (24, 40, 3)


def _keras_order(img: Image.Image, spec: InputSpec, prep: Preprocessing) -> np.ndarray:
    """load_img's own order: convert first, then resize (and crop)."""
    keep = ("L", "I;16", "I") if spec.color_mode == "grayscale" else ()
    mode = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}[spec.color_mode]
    if img.mode not in keep and img.mode != mode:
        img = img.convert(mode)
    return to_model_array(img, spec, prep)


@pytest.mark.parametrize("source_mode", sorted(_PER_PIXEL_SOURCE_MODES))
@pytest.mark.parametrize("color_mode", ["grayscale", "rgb", "rgba"])
@pytest.mark.parametrize("keep_aspect_ratio", [False, True])
def test_nearest_resizes_before_converting_with_the_same_result(
    source_mode: str, color_mode: str, keep_aspect_ratio: bool, monkeypatch
) -> None:
    """The reordered path (resize, then convert the smaller image) against Keras' order,
    bit for bit, on noise (every pixel differs from its neighbours), down and up; a
    downscaled image is converted at the target size only."""
    converted: list[tuple[int, int]] = []
    convert = Image.Image.convert

    def recording_convert(im: Image.Image, *args, **kwargs) -> Image.Image:
        converted.append(im.size)
        return convert(im, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", recording_convert)
    rng = np.random.default_rng(len(source_mode) * 7 + len(color_mode))
    prep = Preprocessing(
        rescale=1 / 255, interpolation="nearest", keep_aspect_ratio=keep_aspect_ratio
    )
    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}[color_mode]
    spec = InputSpec(height=23, width=37, channels=channels, color_mode=color_mode)
    for size in [(211, 97), (64, 480), (37, 23), (12, 9)]:
        bands = len(Image.new(source_mode, (1, 1)).getbands())
        noise = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
        img = Image.frombytes(source_mode, size, noise.tobytes())
        if source_mode in ("P", "PA"):
            img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        expected = _keras_order(img.copy(), spec, prep)
        converted.clear()
        got = to_model_array(img, spec, prep)
        if size[0] * size[1] > 23 * 37:
            assert all(s == (37, 23) for s in converted), converted
        assert got.dtype == expected.dtype == np.float32
        assert np.array_equal(got, expected), (source_mode, color_mode, size)
