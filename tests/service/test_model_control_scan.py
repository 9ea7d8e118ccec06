"""The model directory as model control reads it: what is valid, and why the rest is not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import read_bundle
from service.lifecycle import Scanner
from service.preprocess import preprocess
from tests.service.model_repo import model_dir, shifted_version, tamper, write_slowly
from tests.service.serving import DIGITS, digit_images, reference

_CPU = "CPUExecutionProvider"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return model_dir(tmp_path)


def test_a_committed_copy_is_one_valid_version(models: Path) -> None:
    found = Scanner(models).scan()
    assert list(found) == ["digits"] and list(found["digits"]) == ["1"]
    assert found["digits"]["1"].valid and found["digits"]["1"].reason == ""


def test_every_stage_of_a_copy_in_progress_has_its_reason(models: Path) -> None:
    scanner = Scanner(models)
    target = models / "digits" / "2"
    target.mkdir()
    assert "no bundle.json (still being copied?)" in scanner.scan_model("digits")["2"].reason
    files = shifted_version(target)
    (target / "bundle.json").write_bytes(files["bundle.json"])
    assert "no model.onnx (still being copied?)" in scanner.scan_model("digits")["2"].reason
    (target / "model.onnx").write_bytes(files["model.onnx"][:1000])
    half = scanner.scan_model("digits")["2"]
    assert not half.valid and "sha256" in half.reason and "does not match" in half.reason
    (target / "model.onnx").write_bytes(files["model.onnx"])
    assert scanner.scan_model("digits")["2"].valid
    (target / "bundle.json").write_text('{"name": "digits"')
    assert "invalid bundle" in scanner.scan_model("digits")["2"].reason


def test_the_shifted_version_answers_one_label_later(tmp_path: Path) -> None:
    files = shifted_version(tmp_path / "v2")
    (tmp_path / "v2" / "model.onnx").write_bytes(files["model.onnx"])
    session = ort.InferenceSession(str(tmp_path / "v2" / "model.onnx"), providers=[_CPU])
    blobs = [b for _, b in digit_images()[:20]]
    bundle = read_bundle(DIGITS)
    batch = np.stack(
        [preprocess(b, bundle.input, bundle.preprocessing, max_pixels=10**6) for b in blobs]
    )
    v2 = session.run(["probabilities"], {"image": batch})[0].argmax(axis=1)
    v1 = reference(blobs)["probabilities"].argmax(axis=1)
    assert np.array_equal(v2, (v1 + 1) % 10)


def test_a_verdict_is_reused_until_the_files_change(models: Path) -> None:
    scanner = Scanner(models)
    first = scanner.scan_model("digits")["1"]
    assert scanner.scan_model("digits")["1"] is first  # not hashed again
    tamper(models / "digits" / "1")
    os.utime(models / "digits" / "1" / "model.onnx", ns=(1, 1))  # even with an old mtime
    again = scanner.scan_model("digits")["1"]
    assert again is not first and not again.valid and "sha256" in again.reason


def test_only_numeric_version_directories_count(models: Path) -> None:
    write_slowly(models / "digits" / "2.tmp", shifted_version(models / "x"), pause_s=0, chunks=1)
    shutil.rmtree(models / "x")
    (models / ".hidden").mkdir()
    found = Scanner(models).scan()
    assert list(found) == ["digits"] and list(found["digits"]) == ["1"]
    (models / "digits" / "2.tmp").rename(models / "digits" / "002")
    assert sorted(Scanner(models).scan()["digits"]) == ["1", "2"]


def test_a_missing_model_directory_is_empty_not_an_error(tmp_path: Path) -> None:
    assert Scanner(tmp_path / "nowhere").scan() == {}
