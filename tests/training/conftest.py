"""Shared fixtures: a real PNG class tree and one tiny model trained once per session."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 16
CLASSES = ("horizontal", "slash", "vertical")
PER_CLASS = 16


def draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 grayscale picture of a bar, with noise, so the classes are learnable."""
    image = rng.integers(0, 60, (SIZE, SIZE)).astype(np.uint8)
    offset = int(rng.integers(3, SIZE - 3))
    if kind == "horizontal":
        image[offset - 1 : offset + 1, :] = 255
    elif kind == "vertical":
        image[:, offset - 1 : offset + 1] = 255
    else:
        for i in range(SIZE):
            image[i, max(0, SIZE - 1 - i - 1) : SIZE - i] = 255
    return image


def write_tree(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = PER_CLASS) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(draw(name, rng)).save(root / name / f"{index:03d}.png")
    return root


@dataclass(frozen=True)
class Run:
    """Result of one in-process `convserve-train` call."""

    code: int
    stdout: str
    stderr: str


def run_cli(*argv: str | Path) -> Run:
    from training.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Run(code, out.getvalue(), err.getvalue())


TINY_ARGS = (
    "--image-size", "16", "--color-mode", "grayscale", "--rescale", "1/255",
    "--epochs", "2", "--batch-size", "8", "--validation-split", "0.25", "--seed", "7",
    "--learning-rate", "0.01",
    "--layer", "conv2d:filters=4,kernel_size=3,padding=same",
    "--layer", "max_pooling2d:pool_size=2",
    "--layer", "conv2d:filters=6,kernel_size=3,strides=2",
    "--layer", "max_pooling2d:pool_size=2,padding=same",
    "--layer", "flatten",
    "--layer", "dense:units=8",
)  # fmt: skip


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 16 real PNG files, plus non-image files Keras must skip."""
    root = write_tree(tmp_path_factory.mktemp("tree"))
    (root / "vertical" / "notes.txt").write_text("not an image")
    (root / "slash" / "labels.csv").write_text("a,b\n")
    return root


@dataclass(frozen=True)
class Trained:
    run: Run
    bundle_dir: Path
    keras_path: Path
    models_dir: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, image_tree: Path) -> Trained:
    """Train and export once; every end-to-end test reads this bundle."""
    out = tmp_path_factory.mktemp("models")
    keras_path = out.parent / f"{out.name}-tiny.keras"
    run = run_cli("train", image_tree, "--out", out, "--name", "tiny", "--version", "1",
                  "--save-keras", keras_path, *TINY_ARGS)  # fmt: skip
    assert run.code == 0, run.stderr
    return Trained(run, out / "tiny" / "1", keras_path, out)


@pytest.fixture(scope="session")
def cli() -> Callable[..., Run]:
    """Call `convserve-train` in-process (a subprocess would re-import TensorFlow)."""
    return run_cli


@pytest.fixture(scope="session")
def make_tree() -> Callable[..., Path]:
    return write_tree


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    """The flags of the session's tiny model (same seed), for runs that must match it."""
    return TINY_ARGS
