"""docs/v1.md's examples (TF-Serving-style :predict, KServe V1 :explain) run as written
against the live server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.service.serving import ROOT, LiveServer

DOC = ROOT / "docs" / "v1.md"
SEVEN = Path("tests/data/seven.png")


def run_doc_example(
    doc: Path, replace: dict[str, str], tmp_path: Path, monkeypatch, block: int = 0
) -> None:
    """Exec the page's python block number `block` (the first by default) in a directory
    holding tests/data/seven.png."""
    code = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)[block]
    for old, new in replace.items():
        assert old in code
        code = code.replace(old, new)
    (tmp_path / SEVEN).parent.mkdir(parents=True)
    shutil.copy(ROOT / SEVEN, tmp_path / SEVEN)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(doc), "exec"), {"__name__": "docs_example"})


def test_requests_example_runs(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    host = server.url.removeprefix("http://")
    run_doc_example(DOC, {"127.0.0.1:8000": host}, tmp_path, monkeypatch)
    assert capsys.readouterr().out.splitlines() == ["[7]", "[7]"]


def test_explain_example_runs(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    host = server.url.removeprefix("http://")
    run_doc_example(DOC, {"127.0.0.1:8000": host}, tmp_path, monkeypatch, block=1)
    assert capsys.readouterr().out.splitlines() == ["7 8 49", "32 32"]
