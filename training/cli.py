"""argparse definitions for `convserve-train` (kept apart from dispatch in __main__)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.config import COLOR_MODES, INTERPOLATIONS


def _size(text: str) -> tuple[int, int]:
    """`32` or `32x48` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: use 32 or 32x48") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size {text!r}: use 32 or 32x48")
    return parts[0], parts[1]


def _floats(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated numbers") from None


def _standardisation_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("standardisation (applied at training and serving)")
    group.add_argument("--color-mode", choices=COLOR_MODES)
    group.add_argument("--interpolation", choices=INTERPOLATIONS)
    group.add_argument("--keep-aspect-ratio", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--rescale", help="e.g. 1/255 or 0.5; 'none' to disable")
    for flag in (
        "samplewise-center",
        "samplewise-std-normalization",
        "featurewise-center",
        "featurewise-std-normalization",
    ):
        group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CNN on DATA_DIR/<class>/*.png and export a bundle")
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="MODELS_DIR")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--config", type=Path, help="JSON with data / training / layers sections")
    p.add_argument("--validation-dir", type=Path, help="held-out tree instead of a split")
    p.add_argument(
        "--save-keras", type=Path, metavar="MODEL.keras", help="also save the trained Keras model"
    )
    p.add_argument(
        "--layer",
        action="append",
        metavar="TYPE:K=V,...",
        help="replaces the config's layers, e.g. conv2d:filters=32,kernel_size=3",
    )
    data = p.add_argument_group("data")
    data.add_argument("--image-size", type=_size, metavar="HxW")
    data.add_argument("--validation-split", type=float)
    for flag in ("zoom-range", "width-shift-range", "height-shift-range", "rotation-range"):
        data.add_argument(f"--{flag}", type=float, help="augmentation, training data only")
    data.add_argument("--horizontal-flip", action=argparse.BooleanOptionalAction, default=None)
    _standardisation_flags(p)
    fit = p.add_argument_group("training")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--learning-rate", type=float)
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--early-stopping-patience", type=int, help="0 disables")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export an already-trained .keras model as a bundle")
    p.add_argument("model", type=Path, metavar="MODEL.keras")
    p.add_argument("--out", type=Path, required=True, metavar="MODELS_DIR")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--classes", help="comma-separated labels in output order")
    p.add_argument("--data", type=Path, help="DIR/<class>/*: class order, parity batch, metrics")
    p.add_argument("--config", type=Path, help="JSON whose `data` section holds the settings")
    p.add_argument("--mean", type=_floats, help="fitted featurewise mean, one per channel")
    p.add_argument("--std", type=_floats, help="fitted featurewise std, one per channel")
    p.add_argument("--seed", type=int, default=1)
    _standardisation_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convserve-train",
        description="Train a Keras CNN on a folder of images and export a verified ONNX bundle.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    digits = sub.add_parser("digits", help="write scikit-learn's digits as OUT_DIR/<digit>/*.png")
    digits.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    digits.add_argument("--size", type=int, default=32, help="upscaled side in pixels")
    _train_parser(sub)
    _export_parser(sub)
    return parser


DATA_KEYS = (
    "image_size",
    "color_mode",
    "interpolation",
    "keep_aspect_ratio",
    "rescale",
    "samplewise_center",
    "samplewise_std_normalization",
    "featurewise_center",
    "featurewise_std_normalization",
    "zoom_range",
    "width_shift_range",
    "height_shift_range",
    "rotation_range",
    "horizontal_flip",
    "validation_split",
)
TRAINING_KEYS = ("epochs", "learning_rate", "batch_size", "seed", "early_stopping_patience")


def overrides(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    return {key: getattr(args, key, None) for key in keys}
