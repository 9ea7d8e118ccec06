"""`export`: bundle an already-trained .keras model (functional or Sequential)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import read_bundle
from training.errors import TrainingError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sequential_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained but complete Sequential RGB model with Keras' own layer names."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 10, 3)),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])  # fmt: skip
    path = tmp_path_factory.mktemp("seq") / "seq.keras"
    model.save(path)
    return path


def test_export_trained_functional_model_with_data(
    trained: Any, image_tree: Path, tmp_path: Path, cli: Callable
) -> None:
    run = cli("export", trained.keras_path, "--out", tmp_path, "--name", "again", "--version", "3",
              "--data", image_tree, "--rescale", "1/255")  # fmt: skip
    assert run.code == 0, run.stderr
    bundle = read_bundle(tmp_path / "again" / "3")
    original = read_bundle(trained.bundle_dir)
    assert bundle.classes == original.classes
    assert bundle.feature_maps == original.feature_maps
    assert bundle.input == original.input and bundle.preprocessing == original.preprocessing
    assert bundle.parity <= 1e-4 and 0 <= bundle.metrics.val_accuracy <= 1
    a = ort.InferenceSession(tmp_path / "again" / "3" / "model.onnx")
    b = ort.InferenceSession(trained.bundle_dir / "model.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (5, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(
        a.run(None, {"image": x})[0], b.run(None, {"image": x})[0], atol=1e-6
    )


def test_export_sequential_rgb_with_classes(
    sequential_rgb: Path, tmp_path: Path, cli: Callable
) -> None:
    run = cli("export", sequential_rgb, "--out", tmp_path, "--name", "seq", "--version", "1",
              "--classes", "cat, dog", "--rescale", "1/255",
              "--interpolation", "bilinear")  # fmt: skip
    assert run.code == 0, run.stderr
    bundle = read_bundle(tmp_path / "seq" / "1")
    assert bundle.classes == ["cat", "dog"]
    assert (bundle.input.height, bundle.input.width, bundle.input.color_mode) == (12, 10, "rgb")
    assert bundle.preprocessing.interpolation == "bilinear"
    assert [(f.kind, f.shape) for f in bundle.feature_maps] == [
        ("Conv2D", [12, 10, 3]), ("MaxPooling2D", [6, 5, 3]),
    ]  # fmt: skip
    assert bundle.metrics.val_accuracy is None  # no --data, nothing measured
    session = ort.InferenceSession(tmp_path / "seq" / "1" / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["probabilities"] + [
        f.name for f in bundle.feature_maps
    ]


def test_export_featurewise_stats_from_flags(
    sequential_rgb: Path, tmp_path: Path, cli: Callable
) -> None:
    run = cli("export", sequential_rgb, "--out", tmp_path, "--name", "fw", "--version", "1",
              "--classes", "a,b", "--featurewise-center", "--mean", "0.25,0.5,0.75")  # fmt: skip
    assert run.code == 0, run.stderr
    prep = read_bundle(tmp_path / "fw" / "1").preprocessing
    assert prep.featurewise_center and prep.mean == [0.25, 0.5, 0.75]
    assert not prep.featurewise_std_normalization and prep.std is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--classes", "a,b,c"), "3 classes were given"),
        (("--classes", "a,b", "--color-mode", "grayscale"), "wrong channel count"),
        (("--classes", "a,b", "--featurewise-center"), "needs --mean/--std or --data"),
        (("--classes", "a,b", "--featurewise-center", "--mean", "1,2"), "3 value(s)"),
        ((), "give --classes or --data"),
    ],
)
def test_export_refusals(
    sequential_rgb: Path, tmp_path: Path, cli: Callable, extra: tuple, message: str
) -> None:
    run = cli("export", sequential_rgb, "--out", tmp_path / "m", "--name", "x", "--version", "1",
              *extra)  # fmt: skip
    assert run.code == 2 and message in run.stderr, run.stderr
    assert not (tmp_path / "m").exists() or list((tmp_path / "m").rglob("*")) == []


def test_export_missing_or_broken_model_file(tmp_path: Path, cli: Callable) -> None:
    run = cli("export", tmp_path / "nope.keras", "--out", tmp_path, "--name", "x", "--version", "1",
              "--classes", "a,b")  # fmt: skip
    assert run.code == 2 and "does not exist" in run.stderr
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    run = cli("export", broken, "--out", tmp_path / "m", "--name", "x", "--version", "1",
              "--classes", "a,b")  # fmt: skip
    assert run.code == 2 and "cannot load" in run.stderr
    assert not (tmp_path / "m").exists()


def test_export_refuses_a_model_without_softmax(tmp_path: Path, cli: Callable) -> None:
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))  # logits, not probabilities
    path = tmp_path / "logits.keras"
    keras.Model(inputs, outputs).save(path)
    run = cli("export", path, "--out", tmp_path / "m", "--name", "x", "--version", "1",
              "--classes", "a,b")  # fmt: skip
    assert run.code == 2 and "not a softmax" in run.stderr
    assert list((tmp_path / "m").rglob("*")) == []


@pytest.mark.parametrize(
    "settings", [{"preprocessing_function": lambda x: x * 2}, {"zca_whitening": True}]
)
def test_generators_the_server_cannot_reproduce_are_refused(settings: dict) -> None:
    from tensorflow import keras

    from training.bundle_writer import preprocessing_from_generator

    generator = keras.preprocessing.image.ImageDataGenerator(rescale=1 / 255, **settings)
    with pytest.raises(TrainingError, match="export refused"):
        preprocessing_from_generator(generator, interpolation="nearest", keep_aspect_ratio=False)
