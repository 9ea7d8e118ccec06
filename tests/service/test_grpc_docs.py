"""docs/grpc.md's tritonclient example runs as written against a live gRPC server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.serving import ROOT, LiveServer, free_port, settings
from tests.service.test_v1_docs import run_doc_example


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(settings(grpc_port=free_port())) as server:
        yield server


def test_tritonclient_grpc_example_runs(
    live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    replace = {'"127.0.0.1:8001"': repr(live.grpc_target)}
    run_doc_example(ROOT / "docs" / "grpc.md", replace, tmp_path, monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "True onnxruntime_onnx"
    assert lines[1] == "[7]"
    assert re.fullmatch(r"\[\[b'[0-9.]+:7:7' b'[0-9.]+:\d:\d' b'[0-9.]+:\d:\d'\]\]", lines[2])
    assert lines[3:] == ["(2, 10)", "(1, 32, 32, 16)"]
