"""The model bundle schema: the one contract between `training` and `service`.

Pure pydantic + hashlib; importing it pulls in no server code and no TensorFlow,
so the training package can write bundles against the same schema the server
validates on load.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
FILTERS_FILE = "filters.npz"
INPUT_NAME = "image"
PROBABILITIES_OUTPUT = "probabilities"

ColorMode = Literal["grayscale", "rgb", "rgba"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "hamming", "box", "lanczos"]
CHANNELS_BY_COLOR_MODE: dict[str, int] = {"grayscale": 1, "rgb": 3, "rgba": 4}


class BundleError(Exception):
    """A bundle directory that cannot be served: missing file, bad schema, wrong hash."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The image the model takes: NHWC float32, batch dimension dynamic."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: int = Field(gt=0)
    color_mode: ColorMode

    @model_validator(mode="after")
    def _channels_match_mode(self) -> InputSpec:
        expected = CHANNELS_BY_COLOR_MODE[self.color_mode]
        if self.channels != expected:
            raise ValueError(
                f"color_mode {self.color_mode!r} has {expected} channels, not {self.channels}"
            )
        return self


class Preprocessing(_Strict):
    """Every ImageDataGenerator standardisation training applied, in Keras' order.

    `mean`/`std` are the per-channel float32 values ImageDataGenerator.fit()
    produced for featurewise centring/normalisation.
    """

    rescale: float | None = None
    interpolation: Interpolation = "nearest"
    keep_aspect_ratio: bool = False
    samplewise_center: bool = False
    samplewise_std_normalization: bool = False
    featurewise_center: bool = False
    featurewise_std_normalization: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _fitted_stats_present(self) -> Preprocessing:
        if self.featurewise_center and self.mean is None:
            raise ValueError("featurewise_center needs the fitted `mean`")
        if self.featurewise_std_normalization and self.std is None:
            raise ValueError("featurewise_std_normalization needs the fitted `std`")
        return self


class FeatureMapSpec(_Strict):
    """One exported intermediate layer; also an ONNX output of the same name."""

    name: str
    kind: str  # Keras class name: Conv2D, MaxPooling2D, ...
    shape: list[int]  # H, W, C (no batch dimension)
    filters: int | None = None
    kernel_size: list[int] | None = None
    pool_size: list[int] | None = None
    strides: list[int] | None = None
    padding: str | None = None
    activation: str | None = None


class Metrics(_Strict):
    train_accuracy: float | None = None
    train_loss: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    epochs: int | None = None


class Bundle(_Strict):
    """bundle.json: everything the server needs to serve model.onnx exactly as trained."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[0-9]+$")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tools: dict[str, str] = Field(default_factory=dict)  # tensorflow, keras, tf2onnx, opset
    input: InputSpec
    preprocessing: Preprocessing
    classes: list[str] = Field(min_length=2)
    feature_maps: list[FeatureMapSpec] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    parity: float | None = None  # max |keras - onnxruntime| measured at export
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _unique_names(self) -> Bundle:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        names = [f.name for f in self.feature_maps]
        if len(set(names)) != len(names) or PROBABILITIES_OUTPUT in names:
            raise ValueError("feature-map names must be unique and not 'probabilities'")
        return self

    def feature_map(self, name: str) -> FeatureMapSpec | None:
        return next((f for f in self.feature_maps if f.name == name), None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(directory: Path, *, verify_hash: bool = True) -> Bundle:
    """Validate `directory/bundle.json` and, by default, model.onnx's sha256."""
    directory = Path(directory)
    manifest = directory / BUNDLE_FILE
    model = directory / MODEL_FILE
    if not manifest.is_file():
        raise BundleError(f"{directory}: no {BUNDLE_FILE}")
    if not model.is_file():
        raise BundleError(f"{directory}: no {MODEL_FILE}")
    try:
        bundle = Bundle.model_validate(json.loads(manifest.read_text()))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{manifest}: invalid bundle: {exc}") from exc
    if verify_hash:
        actual = file_sha256(model)
        if actual != bundle.sha256:
            raise BundleError(
                f"{model}: sha256 {actual} does not match bundle.json's {bundle.sha256}; "
                "the model file was modified or corrupted"
            )
    return bundle


def write_bundle(bundle: Bundle, directory: Path) -> Path:
    path = Path(directory) / BUNDLE_FILE
    path.write_text(bundle.model_dump_json(indent=2) + "\n")
    return path
