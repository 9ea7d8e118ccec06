"""The compute-bound benchmark model: a 224x224x3 CNN of five Conv2D blocks (~0.9 GMAC).

Built with Keras (random weights: the benchmark measures work, not accuracy),
saved as .keras and turned into a bundle by the project's own exporter
(`python -m training export`), so it is served exactly like a trained model.
Needs TensorFlow, so it runs here, not on the GPU machine; the bundle under
`benchmarks/.cache/models/heavy/1` (ignored by git) is what that machine gets.

    python -m benchmarks.heavy_model            # builds once, then reuses the cache
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache"
MODELS = CACHE / "models"
NAME, VERSION = "heavy", "1"
SIZE = 224
BLOCKS = (32, 64, 128, 256, 256)  # filters per Conv2D block (3x3 conv + 2x2 max-pool)
CLASSES = [f"class{i}" for i in range(10)]


def macs() -> int:
    """Multiply-accumulates of one image through the conv stack (the head is negligible)."""
    total, side, channels = 0, SIZE, 3
    for filters in BLOCKS:
        total += side * side * 9 * channels * filters
        side, channels = side // 2, filters
    return total


def build_keras(
    path: Path, *, size: int = SIZE, blocks: tuple[int, ...] = BLOCKS, seed: int = 1
) -> Path:
    """Save the untrained model; He-initialised weights keep activations in a sane range."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    layers: list = [keras.Input((size, size, 3))]
    for i, filters in enumerate(blocks, start=1):
        layers.append(
            keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                kernel_initializer="he_normal",
                name=f"conv2d_{i}",
            )
        )
        layers.append(keras.layers.MaxPooling2D(2, name=f"max_pooling2d_{i}"))
    layers += [
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(CLASSES), activation="softmax"),
    ]
    model = keras.Sequential(layers, name=NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def export(keras_path: Path, models_dir: Path = MODELS) -> Path:
    """The project's own exporter, as a user would call it."""
    cmd = [
        sys.executable,
        "-m",
        "training",
        "export",
        str(keras_path),
        "--out",
        str(models_dir),
        "--name",
        NAME,
        "--version",
        VERSION,
        "--classes",
        ",".join(CLASSES),
        "--color-mode",
        "rgb",
        "--rescale",
        "1/255",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return models_dir / NAME / VERSION


def cached_bundle(bundle: Path, make: Callable[[], Path], *, rebuild: bool = False) -> Path:
    """`bundle` if the current schema still reads it, else what `make()` exports afresh."""
    from service.bundle import BundleError, read_bundle

    if (bundle / "bundle.json").is_file() and not rebuild:
        try:
            read_bundle(bundle)
            return bundle
        except BundleError as exc:
            print(f"rebuilding: {exc}")
    if (bundle / "bundle.json").is_file():
        shutil.rmtree(bundle)  # the exporter never overwrites a version
    return make()


def ensure(models_dir: Path = MODELS, *, rebuild: bool = False) -> Path:
    """The cached bundle if the current schema still reads it, else a fresh export."""
    return cached_bundle(
        models_dir / NAME / VERSION,
        lambda: export(build_keras(CACHE / "heavy.keras"), models_dir),
        rebuild=rebuild,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=MODELS, help="models directory")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    bundle = ensure(args.out, rebuild=args.rebuild)
    print(f"{bundle} ({macs() / 1e9:.2f} GMAC per image)")


if __name__ == "__main__":
    main()
