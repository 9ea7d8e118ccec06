"""Seeds, a separate validation directory, augmentation and fitted featurewise statistics."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.bundle import read_bundle

pytestmark = pytest.mark.slow


def test_same_seed_same_class_order_and_close_accuracy(
    trained: Any, image_tree: Path, tmp_path: Path, cli: Callable, tiny_args: tuple
) -> None:
    run = cli("train", image_tree, "--out", tmp_path, "--name", "tiny", "--version", "1",
              *tiny_args)  # fmt: skip
    assert run.code == 0, run.stderr
    first, second = read_bundle(trained.bundle_dir), read_bundle(tmp_path / "tiny" / "1")
    assert first.classes == second.classes
    # 12 validation images: "close" means within one image of each other
    assert abs(first.metrics.val_accuracy - second.metrics.val_accuracy) <= 1 / 12 + 1e-9
    history = [json.loads((d / "training.json").read_text())["history"]
               for d in (trained.bundle_dir, tmp_path / "tiny" / "1")]  # fmt: skip
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=0.05)


def test_validation_dir_augmentation_and_featurewise_stats(
    image_tree: Path, tmp_path: Path, cli: Callable, make_tree: Callable
) -> None:
    train_dir = shutil.copytree(image_tree, tmp_path / "train")
    val_dir = make_tree(tmp_path / "val", ("horizontal", "slash", "vertical"), 2)
    run = cli("train", train_dir, "--out", tmp_path / "m", "--name", "fw", "--version", "2",
              "--validation-dir", val_dir, "--image-size", "16", "--rescale", "1/255",
              "--featurewise-center", "--featurewise-std-normalization",
              "--zoom-range", "0.1", "--rotation-range", "5", "--width-shift-range", "0.1",
              "--height-shift-range", "0.1", "--horizontal-flip",
              "--epochs", "1", "--batch-size", "16",
              "--layer", "conv2d:filters=2,kernel_size=3",
              "--layer", "global_average_pooling2d")  # fmt: skip
    assert run.code == 0, run.stderr
    bundle = read_bundle(tmp_path / "m" / "fw" / "2")
    record = json.loads((tmp_path / "m" / "fw" / "2" / "training.json").read_text())
    assert record["images"] == {"training": 48, "validation": 6}
    pixels = np.stack([np.asarray(Image.open(p), np.float32)
                       for p in sorted(train_dir.rglob("*.png"))])  # fmt: skip
    pixels *= np.float32(1 / 255)
    prep = bundle.preprocessing
    assert prep.featurewise_center and prep.featurewise_std_normalization
    np.testing.assert_allclose(prep.mean, [pixels.mean()], rtol=1e-5)
    np.testing.assert_allclose(prep.std, [(pixels - np.float32(prep.mean[0])).std()], rtol=1e-4)
    assert [f.name for f in bundle.feature_maps] == ["conv2d_1"]
