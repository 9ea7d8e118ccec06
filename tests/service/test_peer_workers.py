"""Workers of one server report ready only once every live worker has warmed up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.peer_workers import WARMED_FILE, mark_warmed, wait_for_peers, warmed_workers


def test_only_live_warmed_workers_count(tmp_path: Path) -> None:
    assert warmed_workers(tmp_path) == 0
    mark_warmed(tmp_path)
    mark_warmed(tmp_path)  # the same process twice is one worker
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with open(tmp_path / WARMED_FILE, "a") as f:
        f.write(gone.stdout)  # a worker that has exited since
    assert warmed_workers(tmp_path) == 1


def test_waiting_ends_when_the_other_worker_has_warmed_up(tmp_path: Path) -> None:
    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark_warmed(tmp_path)

        async def scenario() -> tuple[bool, float]:
            async def peer_warms_up() -> None:
                await asyncio.sleep(0.3)
                with open(tmp_path / WARMED_FILE, "a") as f:
                    f.write(f"{peer.pid}\n")

            start = time.monotonic()
            writer = asyncio.ensure_future(peer_warms_up())
            ready = await wait_for_peers(2, timeout_s=30, shared=tmp_path)
            await writer
            return ready, time.monotonic() - start

        ready, waited = asyncio.run(scenario())
        assert ready and 0.25 <= waited < 10
    finally:
        peer.kill()
        peer.wait()


def test_a_worker_that_never_warms_up_delays_readiness_only_until_the_timeout(
    tmp_path: Path,
) -> None:
    mark_warmed(tmp_path)
    start = time.monotonic()
    assert asyncio.run(wait_for_peers(2, timeout_s=0.3, shared=tmp_path)) is False
    assert 0.3 <= time.monotonic() - start < 10


def test_one_worker_or_no_shared_directory_waits_for_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert asyncio.run(wait_for_peers(1, timeout_s=30, shared=tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert asyncio.run(wait_for_peers(4, timeout_s=30))
