"""Run configuration: a JSON file with `data`, `training`, `layers` sections, overridden by flags.

Every key is checked; an unknown key or a setting the server could not reproduce
(`preprocessing_function`, `zca_whitening`) is refused here, before TensorFlow loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.spec import DEFAULT_LAYERS

COLOR_MODES = ("grayscale", "rgb", "rgba")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")
UNREPRODUCIBLE = {
    "preprocessing_function": "a custom preprocessing_function cannot be reproduced by the server",
    "zca_whitening": "zca_whitening cannot be reproduced by the server",
}


@dataclass(frozen=True)
class DataConfig:
    """What flow_from_directory and ImageDataGenerator get; augmentation is training-only."""

    image_size: tuple[int, int] = (256, 256)  # height, width
    color_mode: str = "grayscale"
    interpolation: str = "nearest"
    keep_aspect_ratio: bool = False
    rescale: float | None = 1 / 255
    samplewise_center: bool = False
    samplewise_std_normalization: bool = False
    featurewise_center: bool = False
    featurewise_std_normalization: bool = False
    zoom_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    rotation_range: float = 0.0
    horizontal_flip: bool = False
    validation_split: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 1
    early_stopping_patience: int = 0  # 0 disables early stopping


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    layers: list[dict[str, Any]] = field(default_factory=lambda: [dict(x) for x in DEFAULT_LAYERS])


def parse_rescale(value: Any) -> float | None:
    """Accept 0.00392..., "1/255" or null; 1/255 is computed as Python does (float64)."""
    if value is None or value == "none":
        return None
    if isinstance(value, str):
        try:
            value = float(Fraction(value.strip())) if "/" in value else float(value)
        except (ValueError, ZeroDivisionError) as exc:
            raise TrainingError(f"rescale: cannot read {value!r} (use e.g. 1/255)") from exc
    if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
        raise TrainingError(f"rescale must be a non-zero number or null, got {value!r}")
    return float(value)


def _coerce(cls: type, section: str, raw: dict[str, Any]) -> Any:
    if not isinstance(raw, dict):
        raise TrainingError(f"config: `{section}` must be an object")
    for key in raw:
        if key in UNREPRODUCIBLE:
            raise TrainingError(f"config: {section}.{key}: refused, {UNREPRODUCIBLE[key]}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise TrainingError(
            f"config: unknown key(s) in `{section}`: {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(known)}"
        )
    return replace(cls(), **raw)


def validate(config: RunConfig) -> RunConfig:
    """Type- and range-check every setting, normalising types (tuples, floats)."""
    d, t = config.data, config.training
    size = d.image_size
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise TrainingError(f"image_size must be [height, width] of positive ints, got {size!r}")
    if d.color_mode not in COLOR_MODES:
        raise TrainingError(f"color_mode must be one of {', '.join(COLOR_MODES)}")
    if d.interpolation not in INTERPOLATIONS:
        raise TrainingError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")
    for name in ("zoom_range", "width_shift_range", "height_shift_range", "rotation_range"):
        value = getattr(d, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise TrainingError(f"{name} must be a number >= 0, got {value!r}")
    if not 0 <= d.validation_split < 1:
        raise TrainingError(f"validation_split must be in [0, 1), got {d.validation_split!r}")
    for name in ("epochs", "batch_size"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TrainingError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(t.learning_rate, int | float) or t.learning_rate <= 0:
        raise TrainingError(f"learning_rate must be > 0, got {t.learning_rate!r}")
    if not isinstance(t.seed, int) or t.seed < 0:
        raise TrainingError(f"seed must be an integer >= 0, got {t.seed!r}")
    if not isinstance(t.early_stopping_patience, int) or t.early_stopping_patience < 0:
        raise TrainingError("early_stopping_patience must be an integer >= 0")
    data = replace(d, image_size=(int(size[0]), int(size[1])), rescale=parse_rescale(d.rescale))
    return replace(config, data=data, training=replace(t, learning_rate=float(t.learning_rate)))


def load_config(path: Path | None) -> RunConfig:
    """Read a config file; a missing section keeps its defaults."""
    if path is None:
        return validate(RunConfig())
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TrainingError(f"config: cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise TrainingError(f"config: {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise TrainingError(f"config: {path} must hold a JSON object")
    unknown = set(raw) - {"data", "training", "layers", "description"}
    if unknown:
        raise TrainingError(
            f"config: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "allowed: data, training, layers, description"
        )
    config = RunConfig(
        data=_coerce(DataConfig, "data", raw.get("data", {})),
        training=_coerce(TrainConfig, "training", raw.get("training", {})),
        layers=raw.get("layers", RunConfig().layers),
    )
    return validate(config)


def with_overrides(config: RunConfig, data: dict[str, Any], training: dict[str, Any]) -> RunConfig:
    """Apply command-line values (None means 'not given')."""
    data = {k: v for k, v in data.items() if v is not None}
    training = {k: v for k, v in training.items() if v is not None}
    merged = replace(
        config, data=replace(config.data, **data), training=replace(config.training, **training)
    )
    return validate(merged)


def as_dict(config: RunConfig) -> dict[str, Any]:
    return asdict(config)
