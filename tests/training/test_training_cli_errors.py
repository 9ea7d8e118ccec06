"""Bad input to the CLI: a clear message, a non-zero exit, nothing half-written.

All of these fail before any training starts, so they are fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TRAIN = ("--name", "m", "--version", "1", "--image-size", "16", "--epochs", "1")
LAYERS = ("--layer", "conv2d:filters=2", "--layer", "flatten")


def assert_nothing_written(models: Path) -> None:
    assert not models.exists() or list(models.rglob("*")) == []


@pytest.fixture
def tree(tmp_path: Path, make_tree: Callable) -> Path:
    return make_tree(tmp_path / "data", ("a", "b"), 4)


def test_empty_directory(tmp_path: Path, cli: Callable) -> None:
    (tmp_path / "data").mkdir()
    run = cli("train", tmp_path / "data", "--out", tmp_path / "models", *TRAIN)
    assert run.code == 2
    assert "error:" in run.stderr and "no class subdirectories" in run.stderr
    assert "Traceback" not in run.stderr
    assert_nothing_written(tmp_path / "models")


def test_single_class(tmp_path: Path, cli: Callable, make_tree: Callable) -> None:
    make_tree(tmp_path / "data", ("only",), 3)
    run = cli("train", tmp_path / "data", "--out", tmp_path / "models", *TRAIN)
    assert run.code == 2 and "only one class" in run.stderr
    assert_nothing_written(tmp_path / "models")


def test_impossible_spec_fails_before_training(tmp_path: Path, cli: Callable, tree: Path) -> None:
    run = cli("train", tree, "--out", tmp_path / "models", *TRAIN,
              "--layer", "conv2d:filters=4,kernel_size=5,strides=8", "--layer", "conv2d:filters=4",
              "--layer", "flatten")  # fmt: skip
    assert run.code == 2 and "below 1x1" in run.stderr
    assert "Epoch" not in run.stdout
    assert_nothing_written(tmp_path / "models")


def test_unreadable_spec_file(tmp_path: Path, cli: Callable, tree: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"layers": [{"type": "conv2d", "filters": 4,}]}')
    run = cli("train", tree, "--out", tmp_path / "models", *TRAIN, "--config", spec)
    assert run.code == 2 and "not valid JSON" in run.stderr
    run = cli("train", tree, "--out", tmp_path / "models", *TRAIN, "--config", tmp_path / "no.json")
    assert run.code == 2 and "cannot read" in run.stderr
    assert_nothing_written(tmp_path / "models")


def test_existing_output_directory(tmp_path: Path, cli: Callable, tree: Path) -> None:
    existing = tmp_path / "models" / "m" / "1"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("mine")
    run = cli("train", tree, "--out", tmp_path / "models", *TRAIN)
    assert run.code == 2 and "already exists" in run.stderr
    assert [p.name for p in (tmp_path / "models" / "m").iterdir()] == ["1"]
    assert (existing / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "bad name!", "--version", "1"), "model name"),
        (("--name", "m", "--version", "v1"), "must be a number"),
    ],
)
def test_bad_bundle_names(
    tmp_path: Path, cli: Callable, tree: Path, args: tuple, message: str
) -> None:
    run = cli("train", tree, "--out", tmp_path / "models", *args)
    assert run.code == 2 and message in run.stderr
    assert_nothing_written(tmp_path / "models")


def test_argparse_errors_exit_non_zero(tmp_path: Path, cli: Callable, tree: Path) -> None:
    run = cli("train", tree, "--name", "m", "--version", "1")
    assert run.code == 2 and "--out" in run.stderr
    run = cli(
        "train", tree, "--out", tmp_path, "--name", "m", "--version", "1", "--image-size", "x"
    )
    assert run.code == 2 and "image size" in run.stderr


def test_no_held_out_data(tmp_path: Path, cli: Callable, tree: Path) -> None:
    run = cli(
        "train", tree, "--out", tmp_path / "models", *TRAIN, *LAYERS, "--validation-split", "0"
    )
    assert run.code == 2 and "held-out data is needed" in run.stderr
    assert_nothing_written(tmp_path / "models")
