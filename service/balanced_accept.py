"""Spread a server's connections evenly over its worker processes.

uvicorn's workers share one listening socket, and the event loop that wakes
first accepts every connection then pending. A client that opens its keep-alive
connections at once (a load tester, a gateway's pool) found all 8 on one worker
1 time in 5, and at concurrency 2 both on one worker 3 times in 5; the other
worker's CPUs then idled for as long as those connections lived.

Here each worker's loop accepts one connection per wake-up, and only while no
other accepting worker holds fewer connections (counts in the workers' shared
map, service/peer_workers.py). A worker that stood aside for HOLD_BACK_MAX_S
while a connection was still pending accepts it anyway: the others may be busy
for a while (a long run on their loop), and a connection is never left waiting
for longer than that. uvicorn takes this loop through its `loop` option
(`new_event_loop`); with one worker, a socket of its own or no shared map it
listens as uvicorn always does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import select
import socket
import time
from typing import Any

from service import peer_workers

try:
    import uvloop

    _Base: type[asyncio.AbstractEventLoop] = uvloop.Loop
except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
    _Base = asyncio.SelectorEventLoop

log = logging.getLogger("convserve.accept")

SPIN_S = 0.0005  # a worker standing aside first just lets its loop go round ...
HOLD_BACK_S = 0.001  # ... then looks at the socket again only every this often
HOLD_BACK_MAX_S = 0.02  # ... and accepts anyway once a connection waited this long
RETRY_AFTER_ERROR_S = 0.1  # out of file descriptors (EMFILE) and the like
WARN_EVERY_S = 10.0


class BalancedServer:
    """The part of asyncio.Server uvicorn uses (close, sockets), over our own accept."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Any,
        peers: peer_workers.PeerLoad,
        *,
        ssl: Any = None,
        backlog: int = 100,
    ) -> None:
        self._loop, self._sock, self._factory, self._peers = loop, sock, protocol_factory, peers
        self._ssl = ssl
        self._warned = -math.inf  # when accept's last failure was logged
        self._open = 0  # connections made and not yet lost
        self._connecting = 0
        self._aside_since: float | None = None  # standing aside for a pending connection
        self._serving = True
        self._paused = False
        sock.setblocking(False)
        sock.listen(backlog)  # uvicorn binds; the server listens (as asyncio's does)
        peers.set_connections(0)
        loop.add_reader(sock.fileno(), self._readable)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def held(self) -> int:
        """Connections this worker holds (open or being set up)."""
        return self._open + self._connecting

    def _protocol(self) -> Any:
        """uvicorn's protocol, telling the other workers when its connection is lost: a
        count left high would make them take more than their share."""
        protocol = self._factory()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._open -= 1
            self._peers.set_connections(self.held())
            if self._paused:
                self._resume()  # it may hold the fewest now
            lost(exc)

        protocol.connection_lost = connection_lost
        return protocol

    def _readable(self) -> None:
        held = self.held()
        self._peers.set_connections(held)
        fewest = self._peers.fewest_peer_connections()
        if fewest is not None and held > fewest:
            now = time.monotonic()
            self._aside_since = self._aside_since or now
            aside = now - self._aside_since
            if aside < SPIN_S:
                return  # a worker with fewer takes it, usually within microseconds
            if aside < HOLD_BACK_MAX_S:
                self._pause(HOLD_BACK_S)  # that worker is busy for a while
                return
            log.debug("accepting after standing aside %.0f ms", aside * 1e3)
        self._aside_since = None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the connection waits in the backlog
            if (now := time.monotonic()) - self._warned >= WARN_EVERY_S:
                self._warned = now
                log.warning("accepting a connection failed (%s); retrying every %g s",
                            exc, RETRY_AFTER_ERROR_S)  # fmt: skip
            self._pause(RETRY_AFTER_ERROR_S)
            return
        conn.setblocking(False)
        self._connecting += 1
        self._peers.set_connections(held + 1)
        self._loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol, conn, ssl=self._ssl)
            self._open += 1
        except Exception as exc:  # a TLS handshake that failed, a reset: that connection only
            log.debug("a connection failed while being set up: %s", exc)
            conn.close()
        finally:
            self._connecting -= 1

    def _pause(self, seconds: float) -> None:
        self._paused = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if not self._serving or not self._paused:
            return
        self._paused = False
        if not select.select([self._sock], [], [], 0)[0]:
            self._aside_since = None  # another worker took what was pending
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def close(self) -> None:
        """Stop accepting (uvicorn closes the socket itself)."""
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
            self._peers.set_connections(-1)

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop


class BalancedLoop(_Base):  # type: ignore[misc, valid-type]
    """The usual event loop, whose server on a socket shared by workers balances them."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        peers = peer_workers.current()
        sock = kwargs.get("sock")
        if sock is None or peers is None or host is not None or port is not None:
            return await super().create_server(protocol_factory, host, port, **kwargs)
        return BalancedServer(self, sock, protocol_factory, peers, ssl=kwargs.get("ssl"),
                              backlog=kwargs.get("backlog", 100))  # fmt: skip


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `loop` option for workers > 1: "service.balanced_accept:new_event_loop"."""
    return BalancedLoop()
