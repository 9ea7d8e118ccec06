"""augmentation.png: a few training images beside what ImageDataGenerator made of them.

The training generator's own `random_transform` (its zoom, shifts, rotation and
flips, seeded) is applied to images read as flow_from_directory reads them, so
the picture shows exactly the augmentation the model was trained with. The
standardisation (rescale, centring) is left out: it changes the numbers, not
what a person can see.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from training.config import DataConfig

SAMPLES = 4  # images, one per class while classes last
VARIANTS = 5  # augmented versions of each


def pick_files(labels: np.ndarray, count: int = SAMPLES) -> list[int]:
    """Indices of the first image of each class, then of the next images, up to `count`."""
    labels = np.asarray(labels).tolist()
    firsts = {label: index for index, label in reversed(list(enumerate(labels)))}
    chosen = sorted(firsts.values())[:count]
    rest = (i for i in range(len(labels)) if i not in firsts.values())
    while len(chosen) < min(count, len(labels)):
        chosen.append(next(rest))
    return chosen


def samples(
    generator, iterator, config: DataConfig, *, seed: int, count: int = SAMPLES
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, originals (S, H, W, C), augmented (S, V, H, W, C)) in 0..255 floats."""
    from keras.utils import img_to_array, load_img

    names = {index: name for name, index in iterator.class_indices.items()}
    chosen = pick_files(iterator.classes, count)
    originals = np.stack(
        [
            img_to_array(
                load_img(
                    Path(iterator.filepaths[i]),
                    color_mode=config.color_mode,
                    target_size=config.image_size,
                    interpolation=config.interpolation,
                    keep_aspect_ratio=config.keep_aspect_ratio,
                )
            )
            for i in chosen
        ]
    )
    augmented = np.stack(
        [
            [generator.random_transform(image, seed=seed + 1000 * s + v) for v in range(VARIANTS)]
            for s, image in enumerate(originals)
        ]
    )
    return [names[int(iterator.classes[i])] for i in chosen], originals, augmented


def grid_png(labels: list[str], originals: np.ndarray, augmented: np.ndarray, note: str) -> bytes:
    """One row per image: the original, then its augmented versions (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(originals), 1 + augmented.shape[1]
    figure, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            image = originals[r] if c == 0 else augmented[r, c - 1]
            ax = axes[r][c]
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            if pixels.shape[-1] == 1:
                ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(pixels[..., :3])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"augmented {c}", fontsize=9)
            if c == 0:
                ax.set_ylabel(labels[r], fontsize=9)
    figure.suptitle(f"ImageDataGenerator augmentation: {note}", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def describe(config: DataConfig) -> str:
    """The augmentation settings in words, for the picture's title."""
    parts = [
        f"zoom {config.zoom_range:g}" if config.zoom_range else "",
        f"width shift {config.width_shift_range:g}" if config.width_shift_range else "",
        f"height shift {config.height_shift_range:g}" if config.height_shift_range else "",
        f"rotation {config.rotation_range:g}°" if config.rotation_range else "",
        "horizontal flip" if config.horizontal_flip else "",
    ]
    return ", ".join(p for p in parts if p) or "none (the copies equal the originals)"


def augmentation_png(generator, iterator, config: DataConfig, *, seed: int) -> bytes:
    labels, originals, augmented = samples(generator, iterator, config, seed=seed)
    return grid_png(labels, originals, augmented, describe(config))
