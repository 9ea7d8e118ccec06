"""The one ASGI middleware: request id, body-size limit, metrics, one log line.

Plain ASGI (not BaseHTTPMiddleware) to keep per-request overhead small. The
body limit is enforced twice: a Content-Length over the limit is refused
before a byte is read, and a chunked body is counted while it streams in. A
client that leaves mid-body is a 499 in the log and /metrics, not a 500.

A client that leaves after its body is in stops its work: from WATCH_AFTER_S
after the body arrived (a quick answer costs no watcher) a task waits for the
server's `http.disconnect` and cancels the request's task (decoding, queued
rows and all); the request is then a 499 as well, without a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import tracing
from service.access_log import log_access
from service.connection import BODY_TIMED_OUT
from service.errors import Draining, error_response, render
from service.metrics import Metrics
from service.server_state import ServerState

log = logging.getLogger("convserve.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch: `$` would allow a "\n"
# Method labels in /metrics: a client's PROPFIND or BREW must not add a series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Generated ids: a random per-process prefix and a counter (32 hex digits, unique per
# process). uuid4() reads os.urandom per request, which costs tens of microseconds
# in some sandboxes.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
# A request still running this long after its body arrived is watched for its client leaving.
WATCH_AFTER_S = 0.05
CLIENT_CLOSED = 499  # nginx's "client closed request"


class BodyTooLarge(HTTPException):
    """Raised from `receive` as the body passes the limit; FastAPI re-raises HTTPExceptions."""

    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class ClientGone(HTTPException):
    """Raised from `receive` when the client leaves before its body is in: logged and
    counted as 499 (nginx's "client closed request"), not as a 500 with a traceback.
    The answer rendered for it goes nowhere."""

    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection before the body was sent")


class BodiesOverBudget(HTTPException):
    """Raised from `receive` when the bodies held by all requests would pass the budget."""

    code = "queue_full"

    def __init__(self, budget: int) -> None:
        super().__init__(
            503,
            f"the server holds {budget} bytes of request bodies already; retry shortly",
            {"Retry-After": "1"},
        )


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        state: ServerState,
        max_buffered_bytes: int = 0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.state = state  # the data plane's: `.in_flight` for the drain, `.draining`
        # bodies of all requests in flight together (0: no budget): what bounds their memory
        self.max_buffered = max_buffered_bytes
        self.buffered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = None
        length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.fullmatch(candidate) else None
            elif key == b"content-length":
                length = value
        if request_id is None:
            request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        trace = tracing.start_request(scope, request_id) if tracing.enabled else None
        held = [0]  # body bytes this request holds against the budget
        watch = _DisconnectWatch(receive, lambda: started)
        self.state.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if self.state.draining and scope["method"] == "POST":
                # inference requests that arrive after SIGTERM go elsewhere; those already
                # here (queued, decoding, running) are finished by the drain
                response = render(
                    scope["path"], Draining("the server is shutting down; retry elsewhere")
                )
                await response(scope, receive, send_wrapper)
            elif length is not None and (not length.isdigit() or int(length) > self.max_body):
                err = BodyTooLarge(self.max_body)
                response = error_response(scope["path"], 413, err.code, err.detail)
                if not length.isdigit():
                    response = error_response(
                        scope["path"], 400, "bad_request", "invalid Content-Length header"
                    )
                await response(scope, receive, send_wrapper)
            elif self._over_budget(length):
                err = BodiesOverBudget(self.max_buffered)
                response = error_response(scope["path"], 503, err.code, err.detail, err.headers)
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, self._limited(receive, held, watch), send_wrapper)
        except asyncio.CancelledError:
            if not watch.stopped_request():
                raise  # not ours (e.g. the server shutting down)
            status = CLIENT_CLOSED
        except Exception:
            if started:
                raise
            log.exception("unhandled error before a response started")
            response = error_response(scope["path"], 500, "internal_error", "internal server error")
            await response(scope, receive, send_wrapper)
        finally:
            watch.close()
            if scope.get(BODY_TIMED_OUT):  # the connection layer answered 408 and closed
                status = 408
            self.buffered -= held[0]
            self.state.in_flight -= 1
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.request_done(label, method, status, elapsed)
            log_access(scope, status, elapsed, request_id, label)
            if trace is not None:  # after the log line, which carries its trace id
                tracing.end_request(trace, status, label)

    def _over_budget(self, length: bytes | None) -> bool:
        """A declared body that does not fit the budget now: refused before it is read."""
        if not self.max_buffered or length is None:
            return False
        return self.buffered + int(length) > self.max_buffered

    def _limited(self, receive: Receive, held: list[int], watch: _DisconnectWatch) -> Receive:
        """`receive`, counting the body against its limit and the budget (`held[0]`:
        this request's share, given back when it ends); the last of the body arms `watch`."""
        seen = 0
        limit = self.max_body

        body_done = False

        async def receive_limited() -> Message:
            nonlocal seen, body_done
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                seen += size
                if seen > limit:
                    raise BodyTooLarge(limit)
                held[0] += size
                self.buffered += size
                if self.max_buffered and self.buffered > self.max_buffered:
                    raise BodiesOverBudget(self.max_buffered)
                body_done = not message.get("more_body", False)
                if body_done:
                    watch.arm()
            elif message["type"] == "http.disconnect" and not body_done:
                raise ClientGone()
            return message

        return receive_limited


class _DisconnectWatch:
    """Cancels the request's task when its client leaves after the body arrived.

    Armed when the app has read the whole body (before that, `receive` itself
    reports the disconnect: ClientGone); the watcher task starts WATCH_AFTER_S
    later, so quick requests never pay for it. It reads the server's `receive`
    (which then only ever says `http.disconnect`) and cancels the request unless
    an answer has started, which the server finishes or drops by itself.
    """

    def __init__(self, receive: Receive, answered: Callable[[], bool]) -> None:
        self._receive = receive
        self._answered = answered
        self._request = asyncio.current_task()  # the one serving this request
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task | None = None
        self._cancelled = False

    def arm(self) -> None:
        if self._timer is None and self._watcher is None and self._request is not None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self._answered():
            self._cancelled = True
            self._request.cancel()

    def stopped_request(self) -> bool:
        """Whether a CancelledError in the request is this watch's doing (then it is undone)."""
        if not self._cancelled:
            return False
        self._request.uncancel()
        return True

    def close(self) -> None:
        """The request ended: no watching any more."""
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
