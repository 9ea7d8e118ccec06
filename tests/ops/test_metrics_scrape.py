"""Live /metrics, one process and `--workers 2`: process_* and build info are there,
every metric the alert rules and the dashboard read exists (a renamed metric fails
here, not on a dashboard), and promtool accepts the exposition."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import httpx
import onnxruntime
from prometheus_client.parser import text_string_to_metric_families

import service
from tests.ops.ops_support import (
    EXTERNAL,
    alert_rules,
    dashboard_exprs,
    metric_names,
    run_promtool,
    scraped_names,
)
from tests.service.hardening_support import worker_processes
from tests.service.serving import DIGITS, LiveServer, ServerProcess

SEVEN = (DIGITS.parents[2] / "tests" / "data" / "seven.png").read_bytes()
PNG = {"Content-Type": "image/png"}


def used_names() -> set[str]:
    names = set()
    for rule in alert_rules():
        names |= metric_names(rule["expr"])
    for expr in dashboard_exprs():
        names |= metric_names(expr)
    return names


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _check_names_and_promtool(text: str) -> None:
    missing = used_names() - EXTERNAL - scraped_names(text)
    assert not missing, f"used by k8s/monitoring but not in /metrics: {sorted(missing)}"
    out = run_promtool("check", "metrics", stdin=text)
    assert out.returncode == 0, out.stdout + out.stderr


def _build_info_ok(samples: dict[str, list]) -> None:
    (info,) = samples["convserve_build_info"]
    assert info.value == 1
    assert info.labels == {
        "version": service.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def test_the_rules_and_dashboard_read_enough_metrics_to_matter() -> None:
    """Guard against an extraction that finds nothing (and so checks nothing)."""
    names = used_names()
    assert len(names) >= 15, names
    assert {"convserve_ready", "process_resident_memory_bytes", *EXTERNAL} <= names
    assert "convserve_imagez_total" not in scraped_names("convserve_images_total 1\n")


def test_one_process_exports_everything_the_monitoring_reads() -> None:
    with LiveServer() as live, live.client() as client:
        assert client.post("/predict", content=SEVEN, headers=PNG).status_code == 200
        text = client.get("/metrics").text
    samples = _samples(text)
    _check_names_and_promtool(text)
    _build_info_ok(samples)
    # the in-thread server runs in this test process: its own readings
    (rss,) = samples["process_resident_memory_bytes"]
    own = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * own < rss.value < 2 * own
    assert samples["process_open_fds"][0].value > 3
    assert samples["process_cpu_seconds_total"][0].value > 0
    (failures,) = samples["convserve_model_load_failures_total"]
    assert failures.labels == {"model": "digits"} and failures.value == 0
    (capacity,) = samples["convserve_queue_capacity"]
    assert capacity.value == live.settings.max_queue
    (requested,) = samples["convserve_provider_requested"]
    assert requested.labels == {"providers": "cpu"}


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_two_workers_export_process_metrics_for_both() -> None:
    server = ServerProcess("--workers", "2", "--log-format", "json")
    try:
        server.start(timeout=60)
        deadline = time.monotonic() + 60
        while server.output.count('"ready: digits/1') < 2:
            assert time.monotonic() < deadline, server.output[-3000:]
            time.sleep(0.05)
        for _ in range(4):
            with httpx.Client(timeout=30) as c:  # fresh connections: either worker answers
                r = c.post(server.url + "/predict", content=SEVEN, headers=PNG)
                assert r.status_code == 200
        workers = worker_processes(server.proc.pid)
        assert len(workers) == 2, workers
        time.sleep(6)  # past one refresh period: every worker has written its readings
        with httpx.Client(timeout=10) as c:
            first = c.get(server.url + "/metrics").text
        rss_now = sum(_rss(p) for p in workers)
        fds_now = sum(_fds(p) for p in workers)
        time.sleep(0.5)
        with httpx.Client(timeout=10) as c:
            second = c.get(server.url + "/metrics").text
    finally:
        server.stop()
    _check_names_and_promtool(first)
    samples = _samples(first)
    _build_info_ok(samples)  # one series, not one per worker
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
        assert len(samples[name]) == 1, samples[name]  # combined, no pid label
    rss = samples["process_resident_memory_bytes"][0].value
    # the sum over both workers, not one worker's reading
    assert 0.8 * rss_now < rss < 1.25 * rss_now, (rss, rss_now)
    assert abs(samples["process_open_fds"][0].value - fds_now) <= 8
    cpu = samples["process_cpu_seconds_total"][0].value
    assert cpu > 0
    assert _samples(second)["process_cpu_seconds_total"][0].value >= cpu
    start = samples["process_start_time_seconds"][0].value
    assert time.time() - 300 < start < time.time()
