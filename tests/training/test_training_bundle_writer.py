"""The bundle appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.bundle_writer import bundle_path, staging
from training.errors import TrainingError


def test_failure_inside_staging_leaves_nothing(tmp_path: Path) -> None:
    destination = tmp_path / "models" / "m" / "1"
    with pytest.raises(RuntimeError, match="disk full"), staging(destination) as temp:
        (temp / "model.onnx").write_bytes(b"half")
        assert temp.parent == destination.parent and temp.name.startswith(".1.partial-")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []  # the directories it created are gone too


def test_success_renames_into_place(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "1").mkdir()  # an older version stays untouched
    destination = tmp_path / "m" / "2"
    with staging(destination) as temp:
        (temp / "bundle.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]
    assert (destination / "bundle.json").read_text() == "{}"
    assert destination.stat().st_mode & 0o755 == 0o755  # readable by the server


def test_destination_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    destination = tmp_path / "m" / "1"
    with pytest.raises(TrainingError, match="appeared while writing"), staging(destination) as temp:
        (temp / "a").write_text("new")
        destination.mkdir()
        (destination / "b").write_text("someone else's")
    assert [p.name for p in destination.iterdir()] == ["b"]
    assert [p.name for p in destination.parent.iterdir()] == ["1"]


def test_bundle_path_checks(tmp_path: Path) -> None:
    assert bundle_path(tmp_path, "digits", "7") == tmp_path / "digits" / "7"
    (tmp_path / "digits" / "7").mkdir(parents=True)
    with pytest.raises(TrainingError, match="already exists"):
        bundle_path(tmp_path, "digits", "7")
    with pytest.raises(TrainingError, match="model name"):
        bundle_path(tmp_path, "../up", "1")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(TrainingError, match=r"file\.txt is not a writable directory"):
        bundle_path(tmp_path / "file.txt" / "models", "digits", "1")
