"""The course's CNN as a benchmark model: 256x256 grayscale, three classes.

Conv2D 5x5 stride 3 -> MaxPool 5 -> Conv2D 3x3 -> MaxPool 2 -> Flatten ->
Dense 3 (softmax), ~3.7 MMAC per image: decoding and resizing a photo cost far
more than the model, so this is the shape where serving overhead shows.

Built from a layer list through the project's own `training` spec and model
builder (random weights: the benchmark measures work, not accuracy), saved as
.keras and turned into a bundle by `python -m training export`, so it is served
exactly as a trained model would be. Needs TensorFlow.

    python -m benchmarks.course_model      # -> benchmarks/.cache/models/course256/1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.heavy_model import cached_bundle

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache"
MODELS = CACHE / "models"
NAME, VERSION = "course256", "1"
INPUT = (256, 256, 1)
CLASSES = ["circle", "square", "triangle"]
LAYERS = [
    {"type": "conv2d", "filters": 16, "kernel_size": 5, "strides": 3, "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 5},
    {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 2},
    {"type": "flatten"},
]
CONFIG = {
    "description": "benchmark: the course's 256x256 grayscale CNN (issue 11)",
    "data": {"image_size": list(INPUT[:2]), "color_mode": "grayscale", "rescale": "1/255"},
    "layers": LAYERS,
}


def build_keras(path: Path, *, seed: int = 1) -> Path:
    """The spec -> Keras model through training.spec/training.model, saved untrained."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from training.model import build_model
    from training.spec import parse_layers

    keras.utils.set_random_seed(seed)
    model = build_model(parse_layers(LAYERS, INPUT, len(CLASSES)), INPUT, len(CLASSES))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def export(keras_path: Path, models_dir: Path = MODELS) -> Path:
    """The project's own exporter, as a user would call it, with the spec as --config."""
    config = keras_path.with_suffix(".json")
    config.write_text(json.dumps(CONFIG, indent=2) + "\n")
    cmd = [sys.executable, "-m", "training", "export", str(keras_path), "--out", str(models_dir),
           "--name", NAME, "--version", VERSION, "--classes", ",".join(CLASSES),
           "--config", str(config)]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    return models_dir / NAME / VERSION


def ensure(models_dir: Path = MODELS, *, rebuild: bool = False) -> Path:
    """The cached bundle if the current schema still reads it, else a fresh export."""
    return cached_bundle(
        models_dir / NAME / VERSION,
        lambda: export(build_keras(CACHE / f"{NAME}.keras"), models_dir),
        rebuild=rebuild,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=MODELS, help="models directory")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    print(ensure(args.out, rebuild=args.rebuild))


if __name__ == "__main__":
    main()
