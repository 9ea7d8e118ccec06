"""The compute-bound benchmark CNN goes through the project's own exporter into a valid bundle.

Tiny here (32x32, two blocks) so it takes seconds of TensorFlow, not the 224x224 build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import heavy_model
from service.bundle import read_bundle


@pytest.mark.slow
def test_small_variant_exports_as_a_bundle(tmp_path: Path) -> None:
    keras_path = heavy_model.build_keras(tmp_path / "small.keras", size=32, blocks=(4, 8))
    bundle_dir = heavy_model.export(keras_path, tmp_path / "models")
    bundle = read_bundle(bundle_dir)
    assert (bundle.name, bundle.version) == (heavy_model.NAME, heavy_model.VERSION)
    assert (bundle.input.height, bundle.input.width, bundle.input.color_mode) == (32, 32, "rgb")
    assert bundle.classes == heavy_model.CLASSES
    assert [f.kind for f in bundle.feature_maps] == ["Conv2D", "MaxPooling2D"] * 2
    assert bundle.parity is not None and bundle.parity <= 1e-4


def test_full_size_is_about_one_gmac() -> None:
    assert 0.8e9 < heavy_model.macs() < 1.0e9
