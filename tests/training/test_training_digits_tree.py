"""`digits OUT`: scikit-learn's 1,797 real scans as a flow_from_directory PNG tree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def test_digits_tree(tmp_path: Path, cli: Callable) -> None:
    from sklearn.datasets import load_digits

    run = cli("digits", tmp_path / "digits")
    assert run.code == 0, run.stderr
    assert "wrote 1797 images of 10 classes" in run.stdout
    folders = sorted(p.name for p in (tmp_path / "digits").iterdir())
    assert folders == [str(d) for d in range(10)]
    expected = np.bincount(load_digits().target)
    counts = [len(list((tmp_path / "digits" / d).glob("*.png"))) for d in folders]
    assert counts == expected.tolist()
    first = load_digits().images[0]  # a zero; ink values 0..16
    with Image.open(tmp_path / "digits" / "0" / "0000.png") as image:
        assert (image.mode, image.size) == ("L", (32, 32))
        small = np.asarray(image.resize((8, 8), Image.Resampling.BOX), np.float32)
    # bright ink on a dark background, in the same places as the scan
    assert np.corrcoef(small.ravel(), first.ravel())[0, 1] > 0.9


def test_digits_refuses_a_non_empty_directory(tmp_path: Path, cli: Callable) -> None:
    (tmp_path / "x.txt").write_text("mine")
    run = cli("digits", tmp_path)
    assert run.code == 2 and "not empty" in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
