"""`train`: check everything, train, export, verify, write the bundle (in that order).

Inputs that cannot work (data tree, spec, output path) are rejected before
TensorFlow spends any time on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.bundle import CHANNELS_BY_COLOR_MODE, Bundle, InputSpec, Metrics
from training import augmentation, bundle_writer, plots
from training.config import RunConfig, as_dict
from training.data import load_data, scan_directory, warn_skipped
from training.errors import TrainingError
from training.spec import describe, parse_layers

PARITY_BATCH = 64


@dataclass(frozen=True)
class TrainRequest:
    data_dir: Path
    models_dir: Path
    name: str
    version: str
    config: RunConfig
    validation_dir: Path | None = None
    save_keras: Path | None = None


def run_train(request: TrainRequest) -> tuple[Bundle, Path]:
    """Train a CNN on `data_dir` and write MODELS_DIR/<name>/<version>; returns the bundle."""
    config = request.config
    destination = bundle_writer.bundle_path(request.models_dir, request.name, request.version)
    keras_path = request.save_keras
    if keras_path is not None and (keras_path.suffix != ".keras" or keras_path.exists()):
        raise TrainingError(f"--save-keras {request.save_keras}: needs a new *.keras path")
    scan = scan_directory(request.data_dir)
    warn_skipped(scan)
    height, width = config.data.image_size
    channels = CHANNELS_BY_COLOR_MODE[config.data.color_mode]
    input_shape = (height, width, channels)
    layers = parse_layers(config.layers, input_shape, len(scan.classes))
    print(f"classes ({len(scan.classes)}): {', '.join(scan.classes)}")
    print("architecture:\n" + describe(layers, input_shape, len(scan.classes)), flush=True)

    from training.fit import set_seeds, train
    from training.model import build_model

    set_seeds(config.training.seed)
    data = load_data(
        request.data_dir,
        config.data,
        scan,
        batch_size=config.training.batch_size,
        seed=config.training.seed,
        validation_dir=request.validation_dir,
    )
    print(f"training on {data.train.samples} images, validating on {data.validation.samples}")
    model = build_model(layers, input_shape, len(data.classes))
    result = train(model, data, config.training)
    print(f"held-out accuracy {result.val_accuracy:.4f}, loss {result.val_loss:.4f}", flush=True)

    from training.onnx_export import convert

    sample = _validation_sample(data.validation)
    print(f"exporting with tf2onnx, checking onnxruntime on {len(sample)} validation images")
    exported = convert(model, sample)
    curves = plots.training_curves(result.history)
    augmented = augmentation.augmentation_png(
        data.train_generator, data.train, config.data, seed=config.training.seed
    )
    matrix_png, matrix = plots.confusion_matrix(result.val_true, result.val_pred, data.classes)
    record = {
        "data_dir": str(request.data_dir),
        "validation_dir": str(request.validation_dir) if request.validation_dir else None,
        "images": {"training": data.train.samples, "validation": data.validation.samples},
        "config": as_dict(config),
        "history": result.history,
        "confusion_matrix": matrix,
    }
    bundle = bundle_writer.write(
        destination,
        name=request.name,
        version=request.version,
        exported=exported,
        input_spec=InputSpec(
            height=height, width=width, channels=channels, color_mode=config.data.color_mode
        ),
        preprocessing=bundle_writer.preprocessing_from_generator(
            data.validation_generator,
            interpolation=config.data.interpolation,
            keep_aspect_ratio=config.data.keep_aspect_ratio,
        ),
        classes=data.classes,
        metrics=Metrics(
            train_accuracy=result.history["accuracy"][result.best_epoch],
            train_loss=result.history["loss"][result.best_epoch],
            val_accuracy=result.val_accuracy,
            val_loss=result.val_loss,
            epochs=result.epochs_run,
        ),
        pictures={
            "training_curves.png": curves,
            "confusion_matrix.png": matrix_png,
            "augmentation.png": augmented,
            "training.json": (json.dumps(record, indent=2) + "\n").encode(),
        },
    )
    if request.save_keras is not None:
        model.save(request.save_keras)
        print(f"saved the Keras model to {request.save_keras}")
    return bundle, destination


def _validation_sample(iterator) -> np.ndarray:
    """Up to PARITY_BATCH standardised validation images (real data for the parity check)."""

    batches, total = [], 0
    for index in range(len(iterator)):
        images = iterator[index][0]
        batches.append(images)
        total += len(images)
        if total >= PARITY_BATCH:
            break
    return np.concatenate(batches)[:PARITY_BATCH]
