"""`--workers 2`: both worker processes serve, /metrics counts all of them, and the
workers die with their parent, however it ends."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.hardening_support import children, wait_gone
from tests.service.serving import DIGITS, ServerProcess

SEVEN = (DIGITS.parents[2] / "tests" / "data" / "seven.png").read_bytes()


def _samples(text: str) -> dict[str, float]:
    """Sample name -> value summed over label sets (what a dashboard's sum() shows)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _predict_pids(server: ServerProcess) -> set[int]:
    pids = set()
    for line in list(server.lines):
        if line.startswith("{") and '"/predict"' in line:
            pids.add(json.loads(line)["pid"])
    return pids


def _post(url: str) -> int:
    with httpx.Client(timeout=30) as c:  # a fresh connection: any worker may accept it
        r = c.post(url + "/predict", content=SEVEN, headers={"Content-Type": "image/png"})
        return r.status_code


def test_two_workers_share_one_view_of_the_metrics() -> None:
    server = ServerProcess("--workers", "2", "--log-format", "json")
    try:
        server.start(timeout=60)
        deadline = time.monotonic() + 60
        while server.output.count('"ready: digits/1') < 2:  # each worker warms up on its own
            assert time.monotonic() < deadline, server.output[-3000:]
            time.sleep(0.05)
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while len(_predict_pids(server)) < 2 and sent < 800:
                assert set(pool.map(_post, [server.url] * 16)) == {200}
                sent += 16
                time.sleep(0.05)  # the log lines arrive through the pipe
        assert len(_predict_pids(server)) == 2, "one worker served every request"
        for _ in range(6):  # each scrape may land on either worker: all must agree
            with httpx.Client(timeout=10) as c:
                metrics = _samples(c.get(server.url + "/metrics").text)
            assert metrics["convserve_images_total"] == sent
            assert metrics["convserve_batch_size_sum"] == sent
            assert metrics["convserve_ready"] == 1
            assert metrics["convserve_queue_depth"] == 0
            assert metrics["convserve_requests_in_flight"] == 1  # this scrape
            assert metrics["convserve_model_provider"] == 1  # livemax, not one per worker
    finally:
        _stop(server)


def _workers(server: ServerProcess) -> list[int]:
    """The worker processes (uvicorn's parent also runs a resource tracker: not a worker)."""
    return [p for p in children(server.proc.pid) if "spawn_main" in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _stop(server: ServerProcess) -> None:
    """SIGTERM, then wait for the parent and every process it started."""
    pids = children(server.proc.pid) if server.proc.poll() is None else []
    server.terminate()
    try:
        server.proc.wait(30)
    finally:
        server.stop()
    assert wait_gone(pids, 30) == [], server.output[-3000:]


def test_workers_die_with_a_killed_parent() -> None:
    """SIGKILL leaves the parent no chance to stop its workers: the kernel tells them."""
    server = ServerProcess("--workers", "2")
    try:
        server.start(timeout=60)
        workers = _workers(server)
        assert len(workers) == 2, children(server.proc.pid)
        server.stop()  # SIGKILL
        started = time.monotonic()
        left = wait_gone(workers, 30)
        assert left == [], f"orphaned workers {left} still run:\n{server.output[-3000:]}"
        assert time.monotonic() - started < 25  # idle workers drain at once
    finally:
        server.stop()
        wait_gone(children(server.proc.pid) if server.proc.poll() is None else [], 5)
