"""`workers = 0` (auto, the default): one worker per CPU on the CPU, one where one must be."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.execution import cpu_share
from service.settings import Settings
from service.worker_count import MAX_AUTO_WORKERS, resolve_workers
from tests.service.hardening_support import children
from tests.service.serving import DIGITS, ROOT, ServerProcess, settings

SEVEN = (DIGITS.parents[2] / "tests" / "data" / "seven.png").read_bytes()
EXPECTED = min(cpu_share(1), MAX_AUTO_WORKERS)


def test_auto_is_one_worker_per_usable_cpu_on_the_cpu_and_one_where_one_must_be() -> None:
    assert Settings.model_fields["workers"].default == 0
    assert resolve_workers(settings(providers="cpu"))[0] == EXPECTED
    assert resolve_workers(settings(providers="cuda")) == (1, "auto: one process per GPU")
    explicit = settings(providers="cpu", model_control="explicit")
    assert resolve_workers(explicit)[0] == 1
    assert resolve_workers(settings(providers="cpu", workers=3)) == (3, "set")


def test_the_default_server_runs_one_worker_per_cpu_and_a_lone_request_may_use_them_all() -> None:
    server = ServerProcess(env={"CONVSERVE_WORKERS": "0", "CONVSERVE_PROVIDERS": "cpu"})
    try:
        server.start(timeout=90)
        # a probe lands on whichever worker accepts it: once one says ready, all do
        probes = [httpx.get(f"{server.url}/readyz", timeout=10).status_code for _ in range(20)]
        assert probes == [200] * 20, probes
        assert f"{EXPECTED} worker process(es) (auto: " in server.output
        deadline = time.monotonic() + 60
        while server.output.count("ready: digits/1") < EXPECTED:  # each worker warms up
            assert time.monotonic() < deadline, server.output[-3000:]
            time.sleep(0.05)
        if EXPECTED > 1:
            assert len(children(server.proc.pid)) >= EXPECTED
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post("/predict", content=SEVEN, headers={"content-type": "image/png"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["label"] == "7"
            execution = client.get("/models/digits").json()["execution"]
        # each worker batches on its share of the CPUs, but times a lone request on all
        assert execution["cpus"] == max(1, cpu_share(1) // EXPECTED)
        if cpu_share(1) > 1:
            assert f"{cpu_share(1)} threads" in execution["measured"]["solo"]
    finally:
        server.stop()


_HOLD = """
import sys, time
from pathlib import Path
from service.peer_workers import tuning_alone
with tuning_alone():
    start = time.monotonic()
    time.sleep(0.4)
    end = time.monotonic()
Path(sys.argv[1]).write_text(f"{start} {end}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, Linux")
def test_workers_tune_one_at_a_time(tmp_path: Path) -> None:
    """Two processes sharing PROMETHEUS_MULTIPROC_DIR (as workers do) never tune together."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    outs = [tmp_path / f"w{i}.txt" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], cwd=ROOT, env=env) for out in outs
    ]
    for proc in procs:
        assert proc.wait(30) == 0
    (_, first_end), (second_start, _) = sorted(
        tuple(map(float, out.read_text().split())) for out in outs
    )
    assert first_end <= second_start, "the second worker tuned while the first still did"
