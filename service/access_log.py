"""The access line: one per request, written by the log writer thread without a LogRecord.

Through `logging` an access line cost ~14 us on the event loop (the record, its
`extra` fields, the handler lock) and ~12 us more on the writer thread (a copy
of the record, the formatter, a write and a flush per line): on a worker with
one CPU both come out of the requests' time. When the line goes nowhere but
the writer thread (convserve's own handler and formatters, no filter, not
traced), the loop queues a tuple of what the line says and the writer renders
it with a string format, byte for byte the line the formatters would write,
and writes a batch of lines at once. Anything else (a handler or filter added
by an embedding application or a test, tracing on) takes `logging` as before.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import NamedTuple

from service import tracing
from service.logging import JSONFormatter, TextFormatter, enqueue_directly, escaped

log = logging.getLogger("convserve.access")
_MESSAGE = "%s %s %s %d %.1fms id=%s"
_TIME_FORMAT = logging.Formatter.default_time_format
_MSEC_FORMAT = logging.Formatter.default_msec_format


class AccessLine(NamedTuple):
    created: float  # time.time() when the request ended
    client: str
    method: str
    path: str
    status: int
    elapsed_s: float
    request_id: str
    route: str
    client_address: str | None

    def args(self) -> tuple:
        ms = self.elapsed_s * 1000
        return (self.client, self.method, self.path, self.status, ms, self.request_id)

    def extra(self) -> dict:
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "status": self.status,
            "duration_ms": round(self.elapsed_s * 1000, 3),
            "client": self.client_address,
        }

    def render(self, formatter: logging.Formatter | None) -> str | None:
        """The line `formatter` would write for this request; None for a formatter this
        module does not know (the writer then hands it a real record)."""
        msecs = _msecs(self.created)
        if type(formatter) is TextFormatter:
            return TextFormatter.LINE % {
                "asctime": _MSEC_FORMAT % (_local_second(int(self.created)), msecs),
                "levelname": "INFO",
                "name": log.name,
                "message": _MESSAGE % tuple(escaped(value) for value in self.args()),
            }
        if type(formatter) is JSONFormatter:
            message = _MESSAGE % self.args()
            doc = JSONFormatter.head(self.created, msecs, "INFO", log.name, message, os.getpid())
            return json.dumps(doc | self.extra(), default=str)
        return None

    def record(self) -> logging.LogRecord:
        """The LogRecord `log.info` would have made (for other formatters)."""
        record = log.makeRecord(log.name, logging.INFO, "", 0, _MESSAGE, self.args(), None,
                                extra=self.extra())  # fmt: skip
        record.created, record.msecs = self.created, float(_msecs(self.created))
        return record


def _msecs(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord computes `msecs`


_second_cache: tuple[int, str] = (-1, "")


def _local_second(second: int) -> str:
    """`Formatter.formatTime`'s date and time of day (local time), once per second."""
    global _second_cache
    if _second_cache[0] != second:
        _second_cache = (second, time.strftime(_TIME_FORMAT, time.localtime(second)))
    return _second_cache[1]


def log_access(scope: dict, status: int, elapsed_s: float, request_id: str, route: str) -> None:
    """The request's access line, if INFO lines are on."""
    if not log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    address = client[0] if client else None
    line = AccessLine(time.time(), address or "-", scope["method"], scope["path"], status,
                      elapsed_s, request_id, route, address)  # fmt: skip
    if not tracing.enabled and enqueue_directly(log, line):
        return
    log.info(_MESSAGE, *line.args(), extra=line.extra())
