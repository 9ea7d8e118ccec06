"""augmentation.png: which images are shown, what the grid looks like, and that the
augmented copies are the training generator's own transforms (not a re-implementation)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.augmentation import VARIANTS, describe, grid_png, pick_files, samples
from training.config import DataConfig


def test_one_image_per_class_first() -> None:
    assert pick_files(np.array([0, 0, 1, 1, 2, 2]), 4) == [0, 2, 4, 1]
    assert pick_files(np.array([1, 0]), 4) == [0, 1]  # fewer images than asked
    assert pick_files(np.array([0, 1, 2, 3, 4, 5]), 4) == [0, 1, 2, 3]


def test_grid_has_a_row_per_image_and_a_column_per_copy() -> None:
    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, (2, 16, 16, 1)).astype(np.float32)
    augmented = rng.integers(0, 256, (2, 3, 16, 16, 1)).astype(np.float32)
    png = grid_png(["a", "b"], originals, augmented, "rotation 20°")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG"
        assert picture.width > 1.5 * picture.height  # 4 columns, 2 rows


def test_the_title_names_the_settings() -> None:
    assert describe(DataConfig(zoom_range=0.1, rotation_range=10)) == "zoom 0.1, rotation 10°"
    assert describe(DataConfig()).startswith("none")


@pytest.mark.slow
def test_copies_come_from_the_training_generator(image_tree: Path) -> None:
    from training.data import flow, make_generators

    config = DataConfig(image_size=(16, 16), rotation_range=40, width_shift_range=0.2)
    generator, _ = make_generators(config, 0.25)
    iterator = flow(generator, image_tree, config, batch_size=8, shuffle=False, seed=1,
                    subset="training")  # fmt: skip
    labels, originals, augmented = samples(generator, iterator, config, seed=3, count=3)
    assert labels == ["horizontal", "slash", "vertical"]
    assert originals.shape == (3, 16, 16, 1) and augmented.shape == (3, VARIANTS, 16, 16, 1)
    assert all(not np.array_equal(originals[0], copy) for copy in augmented[0])
    expected = generator.random_transform(originals[1], seed=3 + 1000 * 1 + 2)
    np.testing.assert_array_equal(augmented[1, 2], expected)
    plain, _ = make_generators(DataConfig(image_size=(16, 16)), 0.25)
    _, same, copies = samples(plain, iterator, config, seed=3, count=1)
    np.testing.assert_array_equal(copies[0, 0], same[0])  # no augmentation: unchanged
