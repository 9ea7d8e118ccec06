"""`export`: bundle an already-trained .keras model (Sequential or functional).

The standardisation settings come from flags or a config's `data` section; class
names from `--classes` or the class_indices order of `--data`. With `--data` the
parity check runs on real images from it and accuracy is measured there; without
it, on a seeded random batch spanning the standardised input range.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.bundle import Bundle, InputSpec, Metrics
from training import bundle_writer
from training.cli import DATA_KEYS, overrides
from training.config import DataConfig, load_config, with_overrides
from training.data import fit_featurewise, flow, make_generators, scan_directory, warn_skipped
from training.errors import TrainingError

COLOR_BY_CHANNELS = {1: "grayscale", 3: "rgb", 4: "rgba"}
PARITY_BATCH = 64


@dataclass(frozen=True)
class ExportRequest:
    model_path: Path
    models_dir: Path
    name: str
    version: str
    data: DataConfig
    explicit_color_mode: bool
    classes: list[str] | None = None
    data_dir: Path | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportRequest:
        config = with_overrides(load_config(args.config), overrides(args, DATA_KEYS), {})
        classes = None
        if args.classes is not None:
            classes = [c.strip() for c in args.classes.split(",")]
            if any(not c for c in classes):
                raise TrainingError(f"--classes {args.classes!r}: empty class name")
        if classes is None and args.data is None:
            raise TrainingError("export needs the class names: give --classes or --data")
        return cls(
            model_path=args.model,
            models_dir=args.out,
            name=args.name,
            version=args.version,
            data=config.data,
            explicit_color_mode=args.color_mode is not None,
            classes=classes,
            data_dir=args.data,
            mean=args.mean,
            std=args.std,
            seed=args.seed,
        )


def load_keras_model(path: Path):
    """keras.models.load_model with a clear error for a missing or unreadable file."""
    import keras

    if not Path(path).is_file():
        raise TrainingError(f"model file {path} does not exist")
    if Path(path).suffix not in (".keras", ".h5", ".hdf5"):
        raise TrainingError(f"{path}: expected a .keras (or legacy .h5) model file")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise TrainingError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc


def _input_spec(model, request: ExportRequest) -> tuple[InputSpec, DataConfig]:
    shape = model.inputs[0].shape
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise TrainingError(f"model input must be (batch, H, W, C) with fixed H, W, C; got {shape}")
    height, width, channels = (int(d) for d in shape[1:])
    implied = COLOR_BY_CHANNELS.get(channels)
    if implied is None:
        raise TrainingError(f"model input has {channels} channels; expected 1, 3 or 4")
    if request.explicit_color_mode and request.data.color_mode != implied:
        raise TrainingError(
            f"--color-mode {request.data.color_mode} has the wrong channel count for a "
            f"{channels}-channel model input ({implied})"
        )
    data = replace(request.data, image_size=(height, width), color_mode=implied)
    return InputSpec(height=height, width=width, channels=channels, color_mode=implied), data


def _set_fitted_stats(generator, request: ExportRequest, channels: int) -> None:
    for flag, attr, value in (
        (generator.featurewise_center, "mean", request.mean),
        (generator.featurewise_std_normalization, "std", request.std),
    ):
        if value is None:
            continue
        if not flag:
            raise TrainingError(f"--{attr} given but featurewise {attr} is not enabled")
        if len(value) != channels:
            raise TrainingError(f"--{attr} needs {channels} value(s), one per channel")
        setattr(generator, attr, np.asarray(value, np.float32).reshape(1, 1, channels))


def run_export(request: ExportRequest) -> tuple[Bundle, Path]:
    destination = bundle_writer.bundle_path(request.models_dir, request.name, request.version)
    scan = scan_directory(request.data_dir) if request.data_dir else None
    if scan:
        warn_skipped(scan)
    model = load_keras_model(request.model_path)
    input_spec, data_config = _input_spec(model, request)
    _, generator = make_generators(data_config, 0.0)
    _set_fitted_stats(generator, request, input_spec.channels)
    classes = request.classes or (scan.classes if scan else None)
    if scan and request.classes and sorted(request.classes) != scan.classes:
        raise TrainingError(f"--classes {request.classes} differ from --data's {scan.classes}")
    metrics = Metrics()
    if scan:
        iterator = flow(
            generator,
            request.data_dir,
            data_config,
            batch_size=32,
            shuffle=False,
            seed=request.seed,
            subset=None,
            classes=classes,
        )
        needs_fit = (generator.featurewise_center and generator.mean is None) or (
            generator.featurewise_std_normalization and generator.std is None
        )
        if needs_fit:
            fit_featurewise((generator,), iterator, data_config, request.seed)
        sample = np.concatenate([iterator[i][0] for i in range(min(2, len(iterator)))])
        probabilities = model.predict(iterator, verbose=0)
        accuracy = float(np.mean(probabilities.argmax(axis=1) == iterator.classes))
        metrics = Metrics(val_accuracy=accuracy)
    else:
        if (generator.featurewise_center and generator.mean is None) or (
            generator.featurewise_std_normalization and generator.std is None
        ):
            raise TrainingError("featurewise standardisation needs --mean/--std or --data to fit")
        rng = np.random.default_rng(request.seed)
        raw = rng.uniform(0, 255, (PARITY_BATCH, *model.inputs[0].shape[1:])).astype(np.float32)
        sample = np.stack([generator.standardize(np.copy(x)) for x in raw])
    preprocessing = bundle_writer.preprocessing_from_generator(
        generator,
        interpolation=data_config.interpolation,
        keep_aspect_ratio=data_config.keep_aspect_ratio,
    )
    from training.onnx_export import convert

    sample = sample[:PARITY_BATCH]
    print(f"exporting with tf2onnx, checking onnxruntime on {len(sample)} images")
    exported = convert(model, sample)
    bundle = bundle_writer.write(
        destination,
        name=request.name,
        version=request.version,
        exported=exported,
        input_spec=input_spec,
        preprocessing=preprocessing,
        classes=list(classes),
        metrics=metrics,
    )
    return bundle, destination
