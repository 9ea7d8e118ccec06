"""scikit-learn's bundled handwritten digits as a flow_from_directory tree of PNG files.

1,797 real 8x8 scans (values 0..16) become OUT/<digit>/<index>.png, 8-bit grayscale,
ink bright on a dark background (as MNIST), upscaled to 32x32 so the default model
reads them without a resize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import TrainingError

DEFAULT_SIZE = 32


def write_digits(out_dir: Path, size: int = DEFAULT_SIZE) -> dict[str, int]:
    """Write the tree; refuses a non-empty OUT so two data sets never mix."""
    from sklearn.datasets import load_digits

    out_dir = Path(out_dir)
    if size < 8:
        raise TrainingError(f"--size must be at least 8 (the scans are 8x8), got {size}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TrainingError(f"{out_dir} already exists and is not empty; choose another directory")
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    counts: dict[str, int] = {}
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = out_dir / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if size != 8:
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        picture.save(folder / f"{index:04d}.png")
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts
