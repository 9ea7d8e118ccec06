"""service.preprocess against Keras itself, bit for bit, on real image files.

The reference is what training uses: the legacy `ImageDataGenerator(...)
.flow_from_directory(..., shuffle=False)` of tf.keras. Every file of
tests/imagefiles.py sits in one class directory; each configuration is one
flow with a single batch holding all of them, compared with `np.array_equal`
(not allclose) file by file, dtype included. The target size is not square, so
a width/height swap anywhere changes shapes or pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from tensorflow import keras  # the import path training uses (tf.keras legacy API)

from service.bundle import CHANNELS_BY_COLOR_MODE, InputSpec, Preprocessing
from service.preprocess import preprocess
from tests.imagefiles import SampleImage, good_images, image_bytes

pytestmark = pytest.mark.filterwarnings(
    "ignore:Palette images with Transparency:UserWarning",
)

ImageDataGenerator = keras.preprocessing.image.ImageDataGenerator
KERAS_EXTENSIONS = keras.preprocessing.image.DirectoryIterator.white_list_formats
TARGET = (24, 40)  # (height, width), as flow_from_directory's target_size
MAX_PIXELS = 10_000_000
COLOR_MODES = ["grayscale", "rgb", "rgba"]


@dataclass(frozen=True)
class Corpus:
    root: Path  # flow_from_directory's directory; one class inside
    files: list[tuple[str, SampleImage]]  # (file name on disk, image), in Keras' order


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    images = good_images(seed=7)

    def extra(name: str, mode: str, size: tuple[int, int]) -> SampleImage:
        return SampleImage(name, image_bytes(mode, size, seed=3), mode, size)

    images += [
        extra("RGB_exact_target.png", "RGB", (TARGET[1], TARGET[0])),  # no resize at all
        extra("L_exact_target.png", "L", (TARGET[1], TARGET[0])),
        extra("RGB_transposed_target.png", "RGB", (TARGET[0], TARGET[1])),  # catches W/H swaps
    ]
    root = tmp_path_factory.mktemp("parity")
    class_dir = root / "all"
    class_dir.mkdir()
    files = []
    for i, image in enumerate(images):
        name = f"{i:03d}_{image.name}"
        # flow_from_directory lists files by extension (no .gif/.webp) but decodes by
        # content, so GIF and WebP files get a listed extension to be read at all.
        if not name.lower().endswith(KERAS_EXTENSIONS):
            name += ".png"
        (class_dir / name).write_bytes(image.data)
        files.append((name, image))
    return Corpus(root, files)


def keras_batch(corpus: Corpus, generator, color_mode: str, prep: Preprocessing) -> np.ndarray:
    """One flow, one batch of every file, exactly as training reads a directory."""
    flow = generator.flow_from_directory(
        str(corpus.root),
        target_size=TARGET,
        color_mode=color_mode,
        class_mode="categorical",
        batch_size=len(corpus.files),
        shuffle=False,
        interpolation=prep.interpolation,
        keep_aspect_ratio=prep.keep_aspect_ratio,
    )
    assert [Path(f).name for f in flow.filenames] == [name for name, _ in corpus.files]
    x, _ = flow[0]
    return x


def ours(corpus: Corpus, color_mode: str, prep: Preprocessing) -> list[np.ndarray]:
    spec = InputSpec(
        height=TARGET[0],
        width=TARGET[1],
        channels=CHANNELS_BY_COLOR_MODE[color_mode],
        color_mode=color_mode,
    )
    return [preprocess(img.data, spec, prep, max_pixels=MAX_PIXELS) for _, img in corpus.files]


def assert_bitwise(expected: np.ndarray, actual: list[np.ndarray], corpus: Corpus) -> None:
    assert expected.dtype == np.float32
    assert len(actual) == len(expected) == len(corpus.files)
    mismatches = []
    for want, got, (name, image) in zip(expected, actual, corpus.files, strict=True):
        if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            detail = f"{got.dtype}{got.shape} vs {want.dtype}{want.shape}"
            if got.shape == want.shape:
                detail += f", max |diff| {np.max(np.abs(got.astype(np.float64) - want)):.3g}"
            mismatches.append(f"{name} (mode {image.mode}): {detail}")
    assert not mismatches, "not bit-equal to Keras:\n" + "\n".join(mismatches)


def standardization(prep: Preprocessing) -> dict:
    """The ImageDataGenerator arguments that `prep` stands for (no augmentation)."""
    return dict(
        rescale=prep.rescale,
        samplewise_center=prep.samplewise_center,
        samplewise_std_normalization=prep.samplewise_std_normalization,
        featurewise_center=prep.featurewise_center,
        featurewise_std_normalization=prep.featurewise_std_normalization,
    )


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("keep_aspect_ratio", [False, True])
@pytest.mark.parametrize("color_mode", COLOR_MODES)
def test_rescale_resize_modes(
    corpus: Corpus, color_mode: str, keep_aspect_ratio: bool, interpolation: str
) -> None:
    prep = Preprocessing(
        rescale=1.0 / 255, interpolation=interpolation, keep_aspect_ratio=keep_aspect_ratio
    )
    expected = keras_batch(corpus, ImageDataGenerator(**standardization(prep)), color_mode, prep)
    assert_bitwise(expected, ours(corpus, color_mode, prep), corpus)


@pytest.mark.parametrize(
    ("interpolation", "keep_aspect_ratio"),
    [("bicubic", False), ("hamming", True), ("box", False), ("lanczos", True)],
)
def test_other_pil_filters(corpus: Corpus, interpolation: str, keep_aspect_ratio: bool) -> None:
    prep = Preprocessing(
        rescale=1.0 / 255, interpolation=interpolation, keep_aspect_ratio=keep_aspect_ratio
    )
    expected = keras_batch(corpus, ImageDataGenerator(**standardization(prep)), "rgb", prep)
    assert_bitwise(expected, ours(corpus, "rgb", prep), corpus)


def test_no_rescale_keeps_raw_values(corpus: Corpus) -> None:
    """16-bit, 32-bit int and float grayscale stay un-narrowed when there is no rescale."""
    prep = Preprocessing(interpolation="bilinear")
    expected = keras_batch(corpus, ImageDataGenerator(), "grayscale", prep)
    assert expected.max() > 255  # the I;16 / I files really kept their range
    assert_bitwise(expected, ours(corpus, "grayscale", prep), corpus)


@pytest.mark.parametrize("color_mode", COLOR_MODES)
def test_samplewise(corpus: Corpus, color_mode: str) -> None:
    prep = Preprocessing(
        rescale=1.0 / 255,
        interpolation="bilinear",
        keep_aspect_ratio=True,
        samplewise_center=True,
        samplewise_std_normalization=True,
    )
    expected = keras_batch(corpus, ImageDataGenerator(**standardization(prep)), color_mode, prep)
    assert_bitwise(expected, ours(corpus, color_mode, prep), corpus)


@pytest.mark.parametrize(
    ("color_mode", "samplewise"), [("grayscale", False), ("rgb", True), ("rgba", False)]
)
def test_featurewise_after_fit(corpus: Corpus, color_mode: str, samplewise: bool) -> None:
    """Fit on the raw images (as training does), copy mean/std into the bundle's lists."""
    base = Preprocessing(interpolation="nearest")
    sample = keras_batch(corpus, ImageDataGenerator(), color_mode, base)
    generator = ImageDataGenerator(
        rescale=1.0 / 255,
        samplewise_center=samplewise,
        samplewise_std_normalization=samplewise,
        featurewise_center=True,
        featurewise_std_normalization=True,
    )
    generator.fit(sample)
    # The server casts the bundle's lists to float32: exact only if fit() stores float32.
    assert generator.mean.dtype == np.float32 and generator.std.dtype == np.float32
    prep = base.model_copy(
        update=dict(
            rescale=1.0 / 255,
            samplewise_center=samplewise,
            samplewise_std_normalization=samplewise,
            featurewise_center=True,
            featurewise_std_normalization=True,
            mean=[float(v) for v in generator.mean.ravel()],
            std=[float(v) for v in generator.std.ravel()],
        )
    )
    prep = Preprocessing.model_validate(prep.model_dump())  # as read back from bundle.json
    assert len(prep.mean) == CHANNELS_BY_COLOR_MODE[color_mode]
    expected = keras_batch(corpus, generator, color_mode, prep)
    assert_bitwise(expected, ours(corpus, color_mode, prep), corpus)


def test_dividing_by_255_would_not_be_bit_equal(corpus: Corpus) -> None:
    """The test above can fail: the obvious `x / 255.0` is not Keras' `x *= rescale`."""
    prep = Preprocessing(interpolation="bilinear")
    raw = keras_batch(corpus, ImageDataGenerator(), "rgb", prep)
    rescaled = keras_batch(corpus, ImageDataGenerator(rescale=1.0 / 255), "rgb", prep)
    assert not np.array_equal(raw / 255.0, rescaled)
    assert not np.array_equal((raw.astype(np.float64) / 255.0).astype(np.float32), rescaled)
    assert np.array_equal(raw * np.float32(1.0 / 255), rescaled)  # the float32 multiply
    served = np.stack(
        ours(corpus, "rgb", Preprocessing(rescale=1.0 / 255, interpolation="bilinear"))
    )
    assert np.array_equal(served, rescaled)
