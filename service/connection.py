"""Per-connection bounds uvicorn does not have: header size and read deadlines.

uvicorn's httptools protocol buffers a request's headers without limit and waits
for them, and for the body, as long as the client likes (a slow-loris client
holds a connection and a request slot for ever). `BoundedHttpToolsProtocol`
adds, per request:

- headers (request line included) over `max_header_bytes` -> 431, closed; counted
  as parsed and, for a header still incomplete, as bytes arrive (httptools holds
  a header until its end), so at most one socket read (256 KiB) more is held;
- headers not complete `header_timeout_s` after the connection opened or the
  request's first byte arrived -> 408, closed;
- a body not complete `body_timeout_s` after its headers -> 408 if no answer has
  started, and the connection is closed (the app sees a disconnect).

`uvicorn_options(settings)` is every uvicorn keyword the server passes, the
connection cap (`limit_concurrency`, 503 beyond) included.

Each of these answers is counted in `convserve_requests_total` like any request:
431, 408 in the headers and the connection cap's 503 with route "-" (no route
ran; method "other" while the headers are incomplete), a body 408 by the
request middleware under its route (it sees the scope's BODY_TIMED_OUT).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from service.settings import Settings

log = logging.getLogger("convserve.connection")
BODY_TIMED_OUT = "convserve.body_timed_out"  # scope key: the middleware counts a 408
NO_ROUTE = "-"  # the route label of answers given before any route ran
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools wheel: h11 with its own header bound, no deadlines
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": reason, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason.replace('_', ' ').title()}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a header-size cap and read deadlines."""

        def __init__(
            self,
            *args: Any,
            max_header_bytes: int,
            header_timeout_s: float,
            body_timeout_s: float,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.max_header_bytes = max_header_bytes
            self.header_timeout_s = header_timeout_s
            self.body_timeout_s = body_timeout_s
            self._awaiting_headers = True
            self._header_bytes = 0  # bytes received while this request's headers arrive
            self._parsed_bytes = 0  # request line and headers as parsed
            self._oversize = False
            self._deadline: asyncio.TimerHandle | None = None
            self._metrics: Any = None  # the app's Metrics; False: none found

        # deadlines
        def _arm(self, seconds: float, on_expiry: Any) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, on_expiry)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _refuse(self, status: int, code: str, message: str, *, in_headers: bool) -> None:
            """Answer if the stream is between responses, then close; the app sees a disconnect."""
            self._disarm()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if in_headers:  # no app runs this request yet; the previous answer must be done
                answer = cycle is None or cycle.response_complete
            else:
                answer = not cycle.response_started
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
                if not in_headers:
                    cycle.scope[BODY_TIMED_OUT] = True
            if answer:
                self.transport.write(_raw_response(status, code, message))
                if in_headers:
                    self._count(status, "other")
            log.info("closing a connection from %s: %s", self.client and self.client[0], message)
            self.transport.close()

        def _headers_late(self) -> None:
            message = "the request headers did not arrive in time"
            self._refuse(408, "request_timeout", message, in_headers=True)

        def _body_late(self) -> None:
            message = "the request body did not arrive in time"
            self._refuse(408, "request_timeout", message, in_headers=False)

        # uvicorn's protocol hooks
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(self.header_timeout_s, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            # a header still incomplete (httptools holds it until its end): bytes on the wire
            if self._awaiting_headers and self._header_bytes > self.max_header_bytes:
                self._too_large()

        def send_400_response(self, msg: str) -> None:
            if self._oversize:  # our own callback error (below), not a malformed request
                self._too_large()
            else:
                super().send_400_response(msg)

        def _too_large(self) -> None:
            limit = self.max_header_bytes
            message = f"the request line and headers exceed the limit of {limit} bytes"
            self._refuse(431, "headers_too_large", message, in_headers=True)

        def _count_header(self, size: int) -> None:
            """Exact count of what the parser handed over; over the limit, stop parsing
            (httptools turns the error into HttpParserError -> send_400_response)."""
            self._parsed_bytes += size
            if self._parsed_bytes > self.max_header_bytes:
                self._oversize = True
                raise ValueError("headers too large")

        def on_url(self, url: bytes) -> None:
            self._count_header(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers = True
            self._parsed_bytes = 0
            if self._deadline is None:  # the first byte of a request on a kept-alive connection
                self._arm(self.header_timeout_s, self._headers_late)

        def on_headers_complete(self) -> None:
            self._awaiting_headers = False
            self._header_bytes = 0
            self._arm(self.body_timeout_s, self._body_late)
            cap = self.limit_concurrency
            refused = cap is not None and max(len(self.connections), len(self.tasks)) >= cap
            super().on_headers_complete()  # over the cap: uvicorn answers 503 itself
            if refused:
                method = self.scope.get("method", "")
                self._count(503, method if method in _METHODS else "other")

        def _count(self, status: int, method: str) -> None:
            """One answer given here in the app's request counter (found once per connection)."""
            if self._metrics is None:
                self._metrics = _app_metrics(self.app)
            if self._metrics is not False:
                self._metrics.requests.labels(NO_ROUTE, method, str(status)).inc()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def timeout_keep_alive_handler(self) -> None:
            self._disarm()
            super().timeout_keep_alive_handler()

else:  # pragma: no cover - uvicorn[standard] brings httptools
    BoundedHttpToolsProtocol = None  # type: ignore[assignment,misc]


def _app_metrics(app: Any) -> Any:
    """The Metrics of the app under uvicorn's wrappers (`.app` chains), or False."""
    for _ in range(8):
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is not None:
            return metrics
        app = getattr(app, "app", None)
    return False


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` / `uvicorn.Config` for these settings."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # service.logging configures the loggers
        "access_log": False,  # the middleware writes one line per request
        "timeout_graceful_shutdown": max(1, int(settings.drain_timeout_s)),
        "log_level": settings.log_level,
        "server_header": False,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    if settings.workers > 1:  # connections spread evenly over the workers
        options["loop"] = "service.balanced_accept:new_event_loop"
    if BoundedHttpToolsProtocol is not None:
        # a partial, not a subclass made here: worker processes receive it pickled
        options["http"] = functools.partial(
            BoundedHttpToolsProtocol,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )
    return options
