"""docs/v2.md's tritonclient example runs as written against the live server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.service.serving import ROOT, LiveServer, distinct_label_images

DOC = ROOT / "docs" / "v2.md"
SEVEN = Path("tests/data/seven.png")


def test_tritonclient_example_runs(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert '"127.0.0.1:8000"' in code
    code = code.replace('"127.0.0.1:8000"', repr(server.url.removeprefix("http://")))
    # the example reads tests/data/seven.png relative to the repo root; use the
    # committed file when there is one, else a scikit-learn seven drawn the same way
    (tmp_path / SEVEN).parent.mkdir(parents=True)
    if (ROOT / SEVEN).is_file():
        shutil.copy(ROOT / SEVEN, tmp_path / SEVEN)
    else:
        seven = next(data for label, data in distinct_label_images(10) if label == 7)
        (tmp_path / SEVEN).write_bytes(seven)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("True [")
    assert lines[1] == "[7]"
    assert re.fullmatch(r"\[\[b'[0-9.]+:7:7' b'[0-9.]+:\d:\d' b'[0-9.]+:\d:\d'\]\]", lines[2])
    assert lines[3] == "(1, 32, 32, 16)"


def test_readme_tritonclient_example_runs(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    readme = ROOT / "README.md"
    code = next(
        block
        for block in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
        if "tritonclient" in block
    )
    code = code.replace('"127.0.0.1:8000"', repr(server.url.removeprefix("http://")))
    (tmp_path / SEVEN).parent.mkdir(parents=True)
    shutil.copy(ROOT / SEVEN, tmp_path / SEVEN)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(readme), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\[\[b'[0-9.]+:7:7' b'[0-9.]+:\d:\d' b'[0-9.]+:\d:\d'\]\]", out), out
