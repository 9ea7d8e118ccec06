"""benchmarks/gpu_check.sh runs on CPU (`--providers cpu --quick`) and writes its report.

The same script is what runs on the GPU machine; here it proves the plumbing:
server start, provider check, answer parity against an onnxruntime CPU session,
throughput points and the JSON/markdown output. Nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import gpu_check, gpu_measure

ROOT = Path(__file__).resolve().parents[2]


def _images_total(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "convserve_images_total"
    )


def test_cpu_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["bash", "benchmarks/gpu_check.sh", "--providers", "cpu", "--quick", "--out", str(out)]
    cmd += ["--workers", "1,2"]  # a second pass with two worker processes
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["ok"] is True
    assert data["checks"]["provider"]["reported"] == {"digits": "CPUExecutionProvider"}
    digits = data["models"]["digits"]
    parity = digits["parity"]["service_vs_cpu"]
    assert parity["ok"] and parity["images"] >= 8 and parity["max_abs_diff"] <= 1e-4
    assert [r["batch"] for r in digits["onnxruntime"]] == [1, 4]
    points = {(r["workers"], r["images_per_request"], r["concurrency"]) for r in digits["service"]}
    assert points == {(1, 1, 1), (1, 1, 4), (1, 4, 1), (1, 4, 4), (2, 1, 4), (2, 4, 4)}
    assert all(r["errors_total"] == 0 and r["responses_total"] > 0 for r in digits["service"])
    assert [o["variant"] for o in digits["options"]] == ["default"]
    # warmed 1, 2, 4 like the server; 3 is the one size below the largest batch not warmed
    (cold,) = digits["new_batch_size"]
    assert cold["batch"] == 3 and cold["first_run_ms"] > 0 and cold["p50_ms"] > 0
    assert [r["input"] for r in digits["onnxruntime_device_input"]] == ["device", "device"]
    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("# gpu_check (cpu): OK") and "through the service" in markdown
    assert "first run at a batch size not run before" in markdown
    assert (out / "convserve.log").is_file() and (out / "metrics.txt").read_text()
    # the two-worker server's /metrics covers both processes: its images add up
    two = (out / "workers-2" / "metrics.txt").read_text()
    two_workers = [r for r in digits["service"] if r["workers"] == 2]
    served = sum(r["responses_total"] * r["images_per_request"] for r in two_workers)
    assert _images_total(two) >= served
    assert "onnxruntime" in (out / "environment.txt").read_text()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine may have CUDA"
)
def test_cuda_without_cuda_fails_loudly(tmp_path: Path) -> None:
    """No GPU: the service refuses to start; the script says why, exits 1, measures nothing."""
    out = tmp_path / "out"
    cmd = ["bash", "benchmarks/gpu_check.sh", "--providers", "cuda", "--quick", "--out", str(out)]
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["ok"] is False and "CUDA" in data["error"]
    digits = data["models"]["digits"]
    assert "CUDA" in digits["error"] and not digits.get("onnxruntime")
    assert (out / "gpu_check.md").read_text().startswith("# gpu_check (cuda): FAILED")


def test_heavy_accepts_a_models_dir(tmp_path: Path) -> None:
    args = gpu_check.parse_args(["--out", str(tmp_path), "--heavy", str(ROOT / "models")])
    assert args.heavy == ROOT / "models" / "digits" / "1"


def test_parity_comparison_catches_a_wrong_answer() -> None:
    classes = ["a", "b", "c"]
    ref = [np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.1, 0.8])]
    same = [{"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 0.1, "b": 0.1, "c": 0.8}]
    assert gpu_measure.compare(classes, ref, same)["max_abs_diff"] < 1e-12
    wrong = [{"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 0.5, "b": 0.1, "c": 0.4}]
    result = gpu_measure.compare(classes, ref, wrong)
    assert result["label_mismatches"] == [1] and result["max_abs_diff"] == pytest.approx(0.4)


def test_gpu_side_imports_no_training_stack() -> None:
    """The GPU machine has no TensorFlow or scikit-learn: nothing gpu_check runs may import them."""
    code = (
        "import sys, benchmarks.gpu_check, benchmarks.plain_server\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'sklearn', 'tf2onnx', 'training')]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_sigterm_stops_the_run_and_keeps_what_it_has(tmp_path: Path) -> None:
    """The GPU run has a hard time limit: when it hits, the server stops, the report is written."""
    out = tmp_path / "out"
    cmd = [
        "bash",
        "benchmarks/gpu_check.sh",
        "--providers",
        "cpu",
        "--duration",
        "1",
        "--out",
        str(out),
    ]
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(600):  # until the first service point is on disk (at most 60 s)
            partial = out / "gpu_check.json"  # replaced atomically: always whole JSON
            if partial.is_file():
                models = json.loads(partial.read_text())["models"]
                if models.get("digits", {}).get("service"):
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    data = json.loads((out / "gpu_check.json").read_text())
    assert "Terminated" in data["error"] and data["ok"] is False
    assert data["models"]["digits"]["service"]  # what was measured before the signal is kept
    assert (out / "gpu_check.md").read_text().startswith("# gpu_check (cpu): FAILED")
