"""The image tree is checked the way flow_from_directory will read it, before training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from training.data import scan_directory
from training.errors import TrainingError


def test_classes_sorted_counts_and_skipped_files(tmp_path: Path, make_tree: Callable) -> None:
    make_tree(tmp_path, ("b", "a", "c"), 3)
    (tmp_path / "a" / "README").write_text("x")
    (tmp_path / "c" / "data.json").write_text("{}")
    scan = scan_directory(tmp_path)
    assert scan.classes == ["a", "b", "c"]
    assert scan.counts == {"a": 3, "b": 3, "c": 3}
    assert sorted(p.name for p in scan.skipped) == ["README", "data.json"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        scan_directory(tmp_path / "nope")


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no class subdirectories"):
        scan_directory(tmp_path)


def test_single_class(tmp_path: Path, make_tree: Callable) -> None:
    make_tree(tmp_path, ("only",), 3)
    with pytest.raises(TrainingError, match="only one class"):
        scan_directory(tmp_path)


def test_class_without_images(tmp_path: Path, make_tree: Callable) -> None:
    make_tree(tmp_path, ("a", "b"), 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(TrainingError, match="without images: empty, texts"):
        scan_directory(tmp_path)


def test_undecodable_image_file(tmp_path: Path, make_tree: Callable) -> None:
    make_tree(tmp_path, ("a", "b"), 2)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but truncated")
    whole = (tmp_path / "a" / "000.png").read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(whole[: len(whole) - 20])  # valid header, cut short
    with pytest.raises(TrainingError, match=r"2 image file\(s\) cannot be decoded") as caught:
        scan_directory(tmp_path)
    assert "cut.png" in str(caught.value) and "broken.png" in str(caught.value)
