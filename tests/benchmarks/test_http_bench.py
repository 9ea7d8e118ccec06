"""benchmarks/http_bench.py runs end to end on CPU in a tiny configuration.

It starts convserve, the plain FastAPI reference (1 and 2 workers) and the bare
ASGI server as real subprocesses and drives them over loopback; the test checks the run completes
and reports every point with no errors, never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import wrk

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "benchmarks.http_bench", "--duration", "0.3", "--warmup", "0.1",
           "--concurrency", "2", "--batch", "2", "--client", "python",
           "--logdir", str(tmp_path / "logs"), "--out", str(out), *extra]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| server" in done.stdout
    return json.loads(out.read_text())


def test_all_targets_both_forms(tmp_path: Path) -> None:
    data = run_bench(tmp_path, "--repeat", "2", "--targets", "convserve,plain1,plain2,bare")
    seen = {(r["target"], r["form"]) for r in data["results"]}
    assert len(data["results"]) == 2 * len(seen) and len(data["inprocess_runs"]) == 2
    assert len(data["summary"]) == len(seen) and {r["repeats"] for r in data["summary"]} == {2}
    forms = {"raw", "multipart x2"}
    both = {(t, f) for t in ("convserve", "plain1", "plain2") for f in forms}
    assert seen == both | {("bare", "raw")}  # the bare server takes raw bodies only
    for r in data["results"]:
        assert r["errors_total"] == 0 and r["responses_total"] > 0, r
    assert set(data["inprocess"]) == {"2", "4"}  # images in flight: 2x1 and 2x2
    assert all(v["images_per_s"] > 0 for v in data["inprocess"].values())
    assert data["machine"]["cpu_count"] >= 1 and data["table"].startswith("| server")
    assert data["table"] in (tmp_path / "results.md").read_text()


@pytest.mark.skipif(not wrk.available(), reason="wrk not installed (apt-get install -y wrk)")
def test_wrk_client(tmp_path: Path) -> None:
    data = run_bench(tmp_path, "--client", "wrk", "--targets", "convserve", "--batch", "0")
    (r,) = data["results"]
    assert r["client"] == "wrk" and r["errors"] == 0 and r["requests"] > 0
