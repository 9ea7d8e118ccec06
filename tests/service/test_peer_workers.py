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


_OTHER_WORKER = """
import sys, time
from pathlib import Path
from service.peer_workers import PeerLoad
peers = PeerLoad(Path(sys.argv[1]))
peers.set_busy(True)
print("busy", flush=True)
sys.stdin.readline()
peers.set_busy(False)
print("idle", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and mmap, Linux")
def test_a_worker_sees_another_busy_until_it_has_been_idle_for_a_while(tmp_path: Path) -> None:
    from service.peer_workers import IDLE_AFTER_MS, PeerLoad

    me = PeerLoad(tmp_path)
    assert me.others_idle()  # nobody else yet
    other = subprocess.Popen([sys.executable, "-c", _OTHER_WORKER, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "busy"
        assert not me.others_idle()
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "idle"
        assert not me.others_idle()  # idle only just now: it may be between two requests
        time.sleep(IDLE_AFTER_MS / 1000 + 0.05)
        assert me.others_idle()
        me.set_busy(True)  # my own flag never counts against me
        assert me.others_idle()
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and mmap, Linux")
def test_a_busy_worker_that_died_does_not_count_and_its_slot_is_reused(tmp_path: Path) -> None:
    from service.peer_workers import PeerLoad

    died = "import sys; from pathlib import Path; from service.peer_workers import PeerLoad\n"
    died += "PeerLoad(Path(sys.argv[1])).set_busy(True)"
    subprocess.run([sys.executable, "-c", died, str(tmp_path)], check=True, timeout=60)
    me = PeerLoad(tmp_path)
    assert me.others_idle()  # its flag is still set, but its process is gone
    assert me.slot == 0  # the dead worker's slot


def test_solo_is_taken_only_while_no_other_worker_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import execution, peer_workers

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, outputs, feeds):
            return self.name

    pair = execution.SoloOrBusy(Session("busy"), Session("solo"), solo_when_idle=True)
    monkeypatch.setattr(peer_workers, "others_idle", lambda: True)
    assert pair.run([], {}) == "solo" and pair.run_alone([], {}) == "solo"
    monkeypatch.setattr(peer_workers, "others_idle", lambda: False)
    assert pair.run([], {}) == "busy" and pair.run_alone([], {}) == "busy"


def test_the_state_reports_its_first_request_in_and_its_last_out() -> None:
    from service.server_state import ServerState

    edges: list[bool] = []
    state = ServerState()
    state.on_busy = edges.append
    state.in_flight += 1
    state.in_flight += 1
    state.in_flight -= 1
    state.in_flight -= 1
    assert edges == [True, False] and state.in_flight == 0
