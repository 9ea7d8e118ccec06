"""benchmarks/explain_bench.py runs end to end (digits only, a few requests): the run
completes and reports both settings with the copies /explain says it made; never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "explain.json"
    cmd = [sys.executable, "-m", "benchmarks.explain_bench", "--quick", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| model" in done.stdout
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["window"], r["stride"], r["copies"]) for r in rows] == [
        ("digits", 8, 4, 49),
        ("digits", 4, 2, 225),
    ]
    for r in rows:
        assert r["json"]["requests"] == r["png"]["requests"] == 3
        assert r["onnxruntime_alone_ms"] > 0 and r["predict_p50_ms"] > 0
