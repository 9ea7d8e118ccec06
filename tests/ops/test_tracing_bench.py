"""benchmarks/tracing_overhead.py runs (a tiny configuration; it never asserts a speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from benchmarks import tracing_overhead


def test_tracing_overhead_runs_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "tracing.json"
    tiny = ["--rounds", "1", "--duration", "0.5", "--warmup", "0.2", "--concurrency", "2"]
    tracing_overhead.main([*tiny, "--out", str(out), "--logdir", str(tmp_path / "logs")])
    result = json.loads(out.read_text())
    for name in ("off", "on"):
        (run,) = result["rounds"][name]
        assert run["requests"] > 0 and run["errors"] == 0
        assert run["server_cpu_us_per_request"] > 0
    traced_log = (tmp_path / "logs" / "tracing-on.log").read_text()
    assert "Traceback" not in traced_log
