"""End to end: train a tiny CNN on real PNG files, export, and serve it with onnxruntime alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.bundle import Bundle, BundleError, file_sha256, read_bundle

Trained = Any  # conftest.Trained: run, bundle_dir, keras_path, models_dir

pytestmark = pytest.mark.slow


def onnx_inputs(bundle: Bundle, files: list[Path]) -> np.ndarray:
    """What the server feeds the model: 8-bit grayscale, float32, `x *= rescale` in float32."""
    batch = np.stack([np.asarray(Image.open(f).convert("L"), np.float32)[..., None] for f in files])
    batch *= np.float32(bundle.preprocessing.rescale)
    return batch


def test_bundle_is_valid_and_complete(trained: Trained) -> None:
    bundle = read_bundle(trained.bundle_dir)  # schema + sha256
    assert bundle.name == "tiny" and bundle.version == "1"
    assert bundle.classes == ["horizontal", "slash", "vertical"]  # class_indices order
    assert bundle.input.model_dump() == {"height": 16, "width": 16, "channels": 1,
                                         "color_mode": "grayscale"}  # fmt: skip
    assert bundle.preprocessing.rescale == 1 / 255
    assert bundle.preprocessing.interpolation == "nearest"
    assert [f.name for f in bundle.feature_maps] == [
        "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
    ]  # fmt: skip
    assert [f.shape for f in bundle.feature_maps] == [[16, 16, 4], [8, 8, 4], [3, 3, 6], [2, 2, 6]]
    conv2 = bundle.feature_map("conv2d_2")
    assert (conv2.kind, conv2.filters, conv2.kernel_size, conv2.strides, conv2.padding,
            conv2.activation) == ("Conv2D", 6, [3, 3], [2, 2], "valid", "relu")  # fmt: skip
    assert bundle.feature_map("max_pooling2d_2").padding == "same"
    assert bundle.parity is not None and 0 <= bundle.parity <= 1e-4
    assert bundle.metrics.epochs == 2 and 0 <= bundle.metrics.val_accuracy <= 1
    assert set(bundle.tools) >= {"tensorflow", "keras", "tf2onnx", "opset"}
    assert bundle.sha256 == file_sha256(trained.bundle_dir / "model.onnx")
    names = {p.name for p in trained.bundle_dir.iterdir()}
    assert names == {"model.onnx", "bundle.json", "filters.npz", "training_curves.png",
                     "confusion_matrix.png", "augmentation.png", "training.json"}  # fmt: skip
    for picture in ("training_curves.png", "confusion_matrix.png", "augmentation.png"):
        with Image.open(trained.bundle_dir / picture) as image:
            assert image.format == "PNG" and image.width > 100
    leftovers = [p for p in trained.models_dir.rglob("*") if ".partial-" in p.name]
    assert leftovers == []


def test_non_image_files_were_skipped_with_a_warning(trained: Trained) -> None:
    assert "warning: skipped 2 non-image file(s)" in trained.run.stderr
    record = json.loads((trained.bundle_dir / "training.json").read_text())
    assert record["images"] == {"training": 36, "validation": 12}  # 3 x 16 PNGs, split 0.25
    assert "Epoch 2/2" in trained.run.stdout  # progress shown


def test_onnxruntime_alone_gives_keras_top_labels(trained: Trained, image_tree: Path) -> None:
    import keras

    bundle = read_bundle(trained.bundle_dir)
    files = sorted(image_tree.rglob("*.png"))
    batch = onnx_inputs(bundle, files)
    session = ort.InferenceSession(trained.bundle_dir / "model.onnx",
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch dimension
    outputs = session.run(None, {"image": batch})
    names = [o.name for o in session.get_outputs()]
    assert names == ["probabilities"] + [f.name for f in bundle.feature_maps]
    for name, value in zip(names[1:], outputs[1:], strict=True):
        assert list(value.shape) == [len(files), *bundle.feature_map(name).shape]

    model = keras.models.load_model(trained.keras_path)
    expected = model.predict(batch, verbose=0)
    np.testing.assert_allclose(outputs[0], expected, atol=1e-4)
    assert outputs[0].argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    single = session.run(["probabilities"], {"image": batch[:1]})[0]  # batch of one works too
    np.testing.assert_allclose(single, outputs[0][:1], atol=1e-5)


def test_filters_npz_holds_the_conv_kernels(trained: Trained) -> None:
    import keras

    model = keras.models.load_model(trained.keras_path)
    with np.load(trained.bundle_dir / "filters.npz") as filters:
        assert sorted(filters.files) == ["conv2d_1", "conv2d_2"]
        assert filters["conv2d_1"].shape == (3, 3, 1, 4)  # kh, kw, in, out
        assert filters["conv2d_2"].shape == (3, 3, 4, 6)
        np.testing.assert_array_equal(filters["conv2d_2"], model.get_layer("conv2d_2").kernel)


def test_tampered_model_is_detected(trained: Trained, tmp_path: Path) -> None:
    copy = shutil.copytree(trained.bundle_dir, tmp_path / "tiny" / "1")
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        read_bundle(copy)


def test_parity_failure_refuses_the_export(trained: Trained, tmp_path: Path) -> None:
    """With a zero tolerance, any measured difference must stop the export."""
    import keras

    from training.errors import TrainingError
    from training.onnx_export import convert

    model = keras.models.load_model(trained.keras_path)
    rng = np.random.default_rng(0)
    sample = rng.uniform(0, 1, (16, 16, 16, 1)).astype(np.float32)
    measured = convert(model, sample).parity
    if measured == 0.0:
        pytest.skip("this platform's conversion matched Keras exactly; nothing to refuse")
    with pytest.raises(TrainingError, match="export refused"):
        convert(model, sample, tolerance=0.0)
