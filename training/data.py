"""Image folders -> Keras' legacy ImageDataGenerator iterators, as in the course material.

The directory is checked first (empty, single class, class without images,
undecodable files) so that bad data fails with a clear message before training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.config import DataConfig
from training.errors import TrainingError

# Keras' DirectoryIterator.white_list_formats; files it does not list are skipped.
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff")
FEATUREWISE_FIT_SAMPLES = 2000


@dataclass(frozen=True)
class DirectoryScan:
    classes: list[str]  # sorted, as flow_from_directory orders them
    counts: dict[str, int]
    skipped: list[Path]


def scan_directory(directory: Path) -> DirectoryScan:
    """Check a `DIR/<class>/*.png` tree the way flow_from_directory will read it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TrainingError(f"data directory {directory} does not exist or is not a directory")
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not classes:
        raise TrainingError(
            f"{directory}: no class subdirectories; expected {directory}/<class>/<image files>"
        )
    if len(classes) < 2:
        raise TrainingError(
            f"{directory}: only one class ({classes[0]!r}); a classifier needs at least two "
            "class subdirectories"
        )
    counts: dict[str, int] = {}
    skipped: list[Path] = []
    broken: list[str] = []
    for name in classes:
        count = 0
        for path in sorted(p for p in (directory / name).rglob("*") if p.is_file()):
            if not path.name.lower().endswith(IMAGE_SUFFIXES):
                skipped.append(path)
                continue
            try:
                with Image.open(path) as image:
                    image.verify()  # structure and checksums, without a full decode
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                broken.append(f"{path} ({type(exc).__name__})")
                continue
            count += 1
        counts[name] = count
    if broken:
        shown = "; ".join(broken[:5]) + (f"; and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise TrainingError(f"{len(broken)} image file(s) cannot be decoded: {shown}")
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise TrainingError(
            f"{directory}: class director{'y' if len(empty) == 1 else 'ies'} without images: "
            f"{', '.join(empty)} (image suffixes read: {', '.join(IMAGE_SUFFIXES)})"
        )
    return DirectoryScan(classes, counts, skipped)


def warn_skipped(scan: DirectoryScan) -> None:
    if scan.skipped:
        examples = ", ".join(str(p) for p in scan.skipped[:3])
        print(
            f"warning: skipped {len(scan.skipped)} non-image file(s) that Keras does not read "
            f"(e.g. {examples})",
            file=sys.stderr,
        )


def _generator_cls():
    from tensorflow import keras  # the course's import path (tf.keras legacy API)

    return keras.preprocessing.image.ImageDataGenerator


def make_generators(config: DataConfig, validation_split: float):
    """Training generator (standardisation + augmentation) and validation one (standardisation)."""
    cls = _generator_cls()
    standardisation = dict(
        rescale=config.rescale,
        samplewise_center=config.samplewise_center,
        samplewise_std_normalization=config.samplewise_std_normalization,
        featurewise_center=config.featurewise_center,
        featurewise_std_normalization=config.featurewise_std_normalization,
        validation_split=validation_split,
    )
    train = cls(
        zoom_range=config.zoom_range,
        width_shift_range=config.width_shift_range,
        height_shift_range=config.height_shift_range,
        rotation_range=config.rotation_range,
        horizontal_flip=config.horizontal_flip,
        **standardisation,
    )
    return train, cls(**standardisation)


def flow(
    generator,
    directory: Path,
    config: DataConfig,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    subset: str | None,
    classes: list[str] | None = None,
):
    return generator.flow_from_directory(
        str(directory),
        target_size=config.image_size,
        color_mode=config.color_mode,
        classes=classes,
        class_mode="categorical",
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        subset=subset,
        interpolation=config.interpolation,
        keep_aspect_ratio=config.keep_aspect_ratio,
    )


def fit_featurewise(generators: tuple, iterator, config: DataConfig, seed: int) -> None:
    """ImageDataGenerator.fit on (a sample of) the training images; copies mean/std to all."""
    if not (config.featurewise_center or config.featurewise_std_normalization):
        return
    from keras.utils import img_to_array, load_img

    paths = list(iterator.filepaths)
    rng = np.random.default_rng(seed)
    if len(paths) > FEATUREWISE_FIT_SAMPLES:
        paths = [paths[i] for i in sorted(rng.choice(len(paths), FEATUREWISE_FIT_SAMPLES, False))]
    batch = np.stack(
        [
            img_to_array(
                load_img(
                    p,
                    color_mode=config.color_mode,
                    target_size=config.image_size,
                    interpolation=config.interpolation,
                    keep_aspect_ratio=config.keep_aspect_ratio,
                )
            )
            for p in paths
        ]
    )
    fitted = generators[0]
    fitted.fit(batch)
    for other in generators[1:]:
        other.mean, other.std = fitted.mean, fitted.std


@dataclass
class DataSplit:
    train: object  # DirectoryIterator (shuffled, augmented)
    validation: object  # DirectoryIterator (not shuffled, standardisation only)
    classes: list[str]
    train_generator: object
    validation_generator: object


def load_data(
    directory: Path,
    config: DataConfig,
    scan: DirectoryScan,
    *,
    batch_size: int,
    seed: int,
    validation_dir: Path | None = None,
) -> DataSplit:
    """Build both iterators from a checked directory and record class_indices order."""
    if validation_dir is not None:
        val_scan = scan_directory(validation_dir)
        warn_skipped(val_scan)
        if val_scan.classes != scan.classes:
            raise TrainingError(
                f"validation directory classes {val_scan.classes} differ from the training "
                f"directory's {scan.classes}"
            )
        split = 0.0
    else:
        split = config.validation_split
        if split <= 0:
            raise TrainingError(
                "held-out data is needed for early stopping, metrics and the export parity "
                "check: set --validation-split > 0 or give --validation-dir"
            )
    train_gen, val_gen = make_generators(config, split)
    subset = ("training", "validation") if validation_dir is None else (None, None)
    train = flow(
        train_gen,
        directory,
        config,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        subset=subset[0],
        classes=scan.classes,
    )
    validation = flow(
        val_gen,
        validation_dir or directory,
        config,
        batch_size=batch_size,
        shuffle=False,
        seed=seed,
        subset=subset[1],
        classes=scan.classes,
    )
    if train.samples == 0 or validation.samples == 0:
        raise TrainingError(
            f"the split leaves {train.samples} training and {validation.samples} validation "
            "images; add images or change --validation-split"
        )
    classes = [name for name, _ in sorted(train.class_indices.items(), key=lambda kv: kv[1])]
    fit_featurewise((train_gen, val_gen), train, config, seed)
    return DataSplit(train, validation, classes, train_gen, val_gen)
