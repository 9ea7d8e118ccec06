"""Connections spread evenly over a server's workers (service/balanced_accept.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service import balanced_accept
from service.peer_workers import _FIELDS, PeerLoad
from tests.service.hardening_support import worker_processes
from tests.service.serving import ServerProcess

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="flock, mmap and /proc: Linux"
)

_PEER = """
import sys
from pathlib import Path
from service.peer_workers import PeerLoad
peers = PeerLoad(Path(sys.argv[1]))
peers.set_connections(int(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()
"""


@contextmanager
def _peer(shared: Path, connections: int) -> Iterator[subprocess.Popen]:
    """Another worker that claims a slot, publishes a count and never accepts anything."""
    peer = subprocess.Popen([sys.executable, "-c", _PEER, str(shared), str(connections)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert peer.stdout.readline().strip() == "ready"
        yield peer
    finally:
        peer.kill()
        peer.wait()


def test_the_fewest_connections_of_the_other_accepting_live_workers(tmp_path: Path) -> None:
    me = PeerLoad(tmp_path)
    assert me.fewest_peer_connections() is None  # alone
    with _peer(tmp_path, 5), _peer(tmp_path, 2) as light:
        me.set_connections(0)  # my own count never counts
        assert me.fewest_peer_connections() == 2
        light.kill()
        light.wait()
        assert me.fewest_peer_connections() == 5  # a dead worker does not count
    with _peer(tmp_path, -1):
        assert me.fewest_peer_connections() is None  # one not accepting yet does not either


async def _accept_one(peers: PeerLoad) -> tuple[float, int, int]:
    """One connection to a BalancedServer of this process: how long it waited to be
    accepted, and the count this worker published while it was open and after the
    client closed it."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    made = asyncio.Event()

    class Hello(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set()

    server = await loop.create_server(Hello, sock=listener)
    assert isinstance(server, balanced_accept.BalancedServer)
    published = lambda: peers._ints[peers.slot * _FIELDS + 3]  # noqa: E731
    try:
        t0 = time.monotonic()
        _, writer = await asyncio.open_connection(*listener.getsockname())
        await asyncio.wait_for(made.wait(), 5)
        waited = time.monotonic() - t0
        await asyncio.sleep(0.01)
        while_open = published()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if published() < while_open:
                break
        return waited, while_open, published()
    finally:
        server.close()
        listener.close()


def _accept_one_balanced(peers: PeerLoad) -> tuple[float, int, int]:
    with asyncio.Runner(loop_factory=balanced_accept.new_event_loop) as runner:
        return runner.run(_accept_one(peers))


@pytest.fixture
def peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PeerLoad:
    """This process as a worker with a slot in `tmp_path` (as DataPlane.start makes it)."""
    from service import peer_workers

    mine = PeerLoad(tmp_path)
    monkeypatch.setattr(peer_workers, "current", lambda: mine)
    return mine


def test_a_worker_with_more_connections_accepts_anyway_once_the_others_stay_stuck(
    peers: PeerLoad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer holds none and never accepts (say it is stuck in a long run): after
    HOLD_BACK_MAX_S the connection is this worker's, not left waiting."""
    held = balanced_accept.BalancedServer.held
    monkeypatch.setattr(balanced_accept.BalancedServer, "held", lambda self: held(self) + 3)
    with _peer(tmp_path, 0):
        waited, while_open, after = _accept_one_balanced(peers)
    assert balanced_accept.HOLD_BACK_MAX_S <= waited < 1.0, waited  # stood aside, then took it
    assert (while_open, after) == (4, 3)  # +1 while open, back down when the client left


def test_a_worker_with_fewer_connections_accepts_at_once_and_counts_them(
    peers: PeerLoad, tmp_path: Path
) -> None:
    with _peer(tmp_path, 2):
        waited, while_open, after = _accept_one_balanced(peers)
    assert waited < balanced_accept.HOLD_BACK_MAX_S and (while_open, after) == (1, 0)


def _established_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """Connections to `port` (ESTABLISHED, server side) held by each of `pids`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    counts = {}
    for pid in pids:
        held = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            held += link.startswith("socket:[") and link[8:-1] in inodes
        counts[pid] = held
    return counts


def test_eight_connections_opened_at_once_land_four_on_each_of_two_workers() -> None:
    """Before, the worker whose loop woke first took all 8 in 1 run of 5 (and 2 of 2 at
    concurrency 2 in 3 of 5): the other worker's CPU idled while they lived."""
    server = ServerProcess(env={"CONVSERVE_WORKERS": "2"}).start(timeout=120)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        workers = worker_processes(server.proc.pid)
        assert len(workers) == 2, workers
        request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        for _ in range(10):
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
            try:
                for c in clients:
                    c.sendall(request)
                for c in clients:
                    assert c.recv(4096).startswith(b"HTTP/1.1 200")
                counts = _established_per_process(port, workers)
            finally:
                for c in clients:
                    c.close()
            assert sorted(counts.values()) == [4, 4], counts
            time.sleep(0.05)  # the workers see the closes
    finally:
        server.terminate()
        server.proc.wait(30)
        server.stop()
    assert server.proc.returncode == 0, server.output[-2000:]
