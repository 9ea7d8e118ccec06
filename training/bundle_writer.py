"""Assemble a bundle directory (model.onnx, bundle.json, filters.npz, pictures) atomically.

Everything is written into a hidden temporary directory next to the destination
and renamed into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.bundle import (
    FILTERS_FILE,
    MODEL_FILE,
    Bundle,
    FeatureMapSpec,
    InputSpec,
    Metrics,
    Preprocessing,
    file_sha256,
    write_bundle,
)
from training.errors import TrainingError
from training.onnx_export import OPSET, Exported


def bundle_path(models_dir: Path, name: str, version: str) -> Path:
    """MODELS_DIR/<name>/<version>, refusing names the schema would reject and existing dirs."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise TrainingError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    if not re.fullmatch(r"[0-9]+", version):
        raise TrainingError(f"model version {version!r}: must be a number, e.g. 1")
    destination = Path(models_dir) / name / version
    if destination.exists():
        raise TrainingError(
            f"output directory {destination} already exists; choose another --version "
            "or remove it first"
        )
    existing = next(p for p in destination.parents if p.exists())  # "." or "/" at worst
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TrainingError(f"cannot create {destination}: {existing} is not a writable directory")
    return destination


def preprocessing_from_generator(
    generator, *, interpolation: str, keep_aspect_ratio: bool
) -> Preprocessing:
    """The generator's standardisation settings, refusing what the server cannot reproduce."""
    if getattr(generator, "preprocessing_function", None) is not None:
        raise TrainingError(
            "export refused: the generator uses a custom preprocessing_function, "
            "which the server cannot reproduce"
        )
    if getattr(generator, "zca_whitening", False):
        raise TrainingError("export refused: zca_whitening cannot be reproduced by the server")

    def channels(value) -> list[float] | None:
        return None if value is None else [float(v) for v in np.asarray(value, np.float32).ravel()]

    return Preprocessing(
        rescale=float(generator.rescale) if generator.rescale else None,
        interpolation=interpolation,
        keep_aspect_ratio=bool(keep_aspect_ratio),
        samplewise_center=bool(generator.samplewise_center),
        samplewise_std_normalization=bool(generator.samplewise_std_normalization),
        featurewise_center=bool(generator.featurewise_center),
        featurewise_std_normalization=bool(generator.featurewise_std_normalization),
        mean=channels(generator.mean) if generator.featurewise_center else None,
        std=channels(generator.std) if generator.featurewise_std_normalization else None,
    )


def feature_map_specs(layers: list) -> list[FeatureMapSpec]:
    specs = []
    for layer in layers:
        kind = type(layer).__name__
        common = dict(
            name=layer.name,
            kind=kind,
            shape=[int(d) for d in layer.output.shape[1:]],
            strides=list(layer.strides),
            padding=layer.padding,
        )
        if kind == "Conv2D":
            activation = getattr(layer.activation, "__name__", str(layer.activation))
            specs.append(
                FeatureMapSpec(
                    **common,
                    filters=int(layer.filters),
                    kernel_size=list(layer.kernel_size),
                    activation=activation,
                )
            )
        else:
            specs.append(FeatureMapSpec(**common, pool_size=list(layer.pool_size)))
    return specs


def filters_npz(layers: list) -> bytes:
    """Conv2D kernels in Keras layout (kh, kw, in, out), keyed by layer name."""
    kernels = {
        layer.name: np.asarray(layer.kernel.numpy(), dtype=np.float32)
        for layer in layers
        if type(layer).__name__ == "Conv2D"
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **kernels)
    return buffer.getvalue()


def tool_versions() -> dict[str, str]:
    import keras
    import onnxruntime
    import tensorflow
    import tf2onnx

    return {
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(OPSET),
    }


@contextlib.contextmanager
def staging(destination: Path) -> Iterator[Path]:
    """A temp dir beside `destination`, renamed onto it on success, removed on failure."""
    created = [p for p in reversed(destination.parents) if not p.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    temp.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be read by the server
    try:
        yield temp
        if destination.exists():
            raise TrainingError(
                f"output directory {destination} appeared while writing; not replaced"
            )
        os.rename(temp, destination)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if still empty
        raise


def write(
    destination: Path,
    *,
    name: str,
    version: str,
    exported: Exported,
    input_spec: InputSpec,
    preprocessing: Preprocessing,
    classes: list[str],
    metrics: Metrics,
    pictures: dict[str, bytes] | None = None,
) -> Bundle:
    """Write the whole bundle, validated by the service's own schema, then rename into place."""
    if exported.keras_outputs[0].shape[1] != len(classes):
        raise TrainingError(
            f"the model has {exported.keras_outputs[0].shape[1]} outputs but "
            f"{len(classes)} classes were given"
        )
    with staging(destination) as temp:
        (temp / MODEL_FILE).write_bytes(exported.onnx_bytes)
        (temp / FILTERS_FILE).write_bytes(filters_npz(exported.feature_layers))
        for filename, content in (pictures or {}).items():
            (temp / filename).write_bytes(content)
        bundle = Bundle(
            name=name,
            version=version,
            tools=tool_versions(),
            input=input_spec,
            preprocessing=preprocessing,
            classes=classes,
            feature_maps=feature_map_specs(exported.feature_layers),
            metrics=metrics,
            parity=exported.parity,
            sha256=file_sha256(temp / MODEL_FILE),
        )
        write_bundle(bundle, temp)
    return bundle
