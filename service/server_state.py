"""The server's one lifecycle state and its in-flight count, read by every front door.

starting -> ready (warm-up done) or failed (warm-up raised); any -> draining
(SIGTERM or shutdown). Health, OIP readiness, gRPC health and the middleware
all read this object, so readiness is derived once (`refusal`). Knows no HTTP.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import APIError, Draining, StartFailed, Starting


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ServerState:
    """Phase, why it failed (if it did), and how many requests are inside the server."""

    def __init__(self, on_ready: Callable[[bool], None] = lambda ready: None) -> None:
        self.phase = Phase.STARTING
        self.reason: str | None = None  # why warm-up failed
        self._in_flight = 0  # counted by the front doors (RequestMiddleware, gRPC)
        self._on_ready = on_ready  # e.g. the convserve_ready gauge
        self.on_busy: Callable[[bool], None] | None = None  # first in, last out (peer_workers)

    @property
    def in_flight(self) -> int:
        """Requests inside the server now (the drain waits for them)."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, count: int) -> None:
        if self.on_busy is not None and (count > 0) != (self._in_flight > 0):
            self.on_busy(count > 0)
        self._in_flight = count

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def draining(self) -> bool:
        return self.phase is Phase.DRAINING

    def to_ready(self) -> None:
        """Warm-up finished; ignored once draining."""
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY
            self._on_ready(True)

    def to_failed(self, reason: str) -> None:
        """Warm-up failed: never ready (the probes say why)."""
        if self.phase is Phase.STARTING:
            self.phase, self.reason = Phase.FAILED, reason

    def to_draining(self) -> bool:
        """Readiness off, new inference refused; False when already draining."""
        if self.phase is Phase.DRAINING:
            return False
        self.phase = Phase.DRAINING
        self._on_ready(False)
        return True

    def refusal(self) -> APIError | None:
        """Why the server is not ready (the error a probe answers with), None when it is."""
        if self.phase is Phase.READY:
            return None
        if self.phase is Phase.DRAINING:
            return Draining("the server is shutting down")
        if self.phase is Phase.FAILED:
            # the reason (an exception's text) is in the log; probes are open to anyone
            return StartFailed("the server could not start serving; the reason is in its log")
        return Starting("models are loading or warming up")

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Count one inference request in flight; Draining when the server is shutting down.

        For front doors other than HTTP (gRPC): RequestMiddleware counts HTTP requests itself.
        """
        if self.draining:
            raise Draining("the server is shutting down; retry elsewhere")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
