"""Log set-up: plain text or one JSON object per line, for the convserve and uvicorn loggers."""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import TextIO

from service import tracing

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Control characters (and Unicode line breaks) in the arguments of a text log line are
# escaped: a request path with %0a must not write a forged second line. The message
# template is the code's own (uvicorn logs a start-up traceback as one); tabs stay.
# JSON escapes everything itself.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c != 9} | {
    c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)
}


def escaped(value: object) -> object:
    if isinstance(value, str | BaseException):
        return str(value).translate(_ESCAPES)
    return value


class TextFormatter(logging.Formatter):
    """`time level logger: message`; request data in the arguments cannot break the line."""

    LINE = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.LINE)

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            record = copy.copy(record)  # other handlers see the record as it was
            if isinstance(record.args, dict):
                record.args = {k: escaped(v) for k, v in record.args.items()}
            else:
                record.args = tuple(escaped(v) for v in record.args)
        return super().format(record)


class JSONFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields become keys."""

    @staticmethod
    def head(created: float, msecs: float, level: str, name: str, message: str, pid: int) -> dict:
        """The keys every line starts with (also service/access_log.py's direct lines)."""
        return {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z",
            "level": level.lower(),
            "logger": name,
            "message": message,
            "pid": pid,  # which worker, with --workers > 1
        }

    def format(self, record: logging.LogRecord) -> str:
        doc = self.head(record.created, record.msecs, record.levelname, record.name,
                        record.getMessage(), record.process)  # fmt: skip
        if tracing.enabled:  # the current span's: the request's, on its access line
            ids = tracing.log_ids()
            if ids is not None:
                doc["trace_id"], doc["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Enqueue(logging.handlers.QueueHandler):
    """Hands each record, unformatted, to the writer thread.

    Formatting and writing a line (~50 us) happened on the event loop for every
    request's access line: a quarter of the loop's time per request at
    concurrency 1 (py-spy). Here the caller only builds the record; what must be
    read in the caller's context (the current span, for JSON lines) is read now.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if tracing.enabled and not hasattr(record, "trace_id"):
            ids = tracing.log_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return record


class _BatchingListener(logging.handlers.QueueListener):
    """Wakes for the first record, then waits `linger` s and writes all that queued.

    One wake-up per record cost a lone request ~0.35 ms at concurrency 1 (2 cores:
    the writer thread took the GIL and a core just as the next request arrived);
    a wake-up per `linger` costs nothing measurable. Lines are at most that late.
    """

    linger = 0.05

    def _monitor(self) -> None:
        while True:
            records = [self.dequeue(True)]
            time.sleep(self.linger)
            while True:
                try:
                    records.append(self.dequeue(False))
                except queue.Empty:
                    break
            lines: list[str] = []  # rendered access lines, written together
            for record in records:
                if record is self._sentinel:
                    self._write(lines)
                    return
                line = self._render(record)
                if line is not None:
                    lines.append(line)
                    continue
                self._write(lines)
                lines = []
                self.handle(record if isinstance(record, logging.LogRecord) else record.record())
            self._write(lines)

    def _render(self, item: object) -> str | None:
        """An access line (service/access_log.py) as text, when the one handler is a
        stream handler whose formatter the line knows; None otherwise."""
        render = getattr(item, "render", None)
        if render is None or len(self.handlers) != 1:
            return None
        handler = self.handlers[0]
        if type(handler) is not _Stderr or handler.level > logging.INFO:
            return None
        try:
            return render(handler.formatter)
        except Exception:  # never the writer thread's end: logging's own path reports it
            return None

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        handler = self.handlers[0]
        try:
            with handler.lock:  # type: ignore[union-attr]
                handler.stream.write("".join(line + handler.terminator for line in lines))
                handler.flush()
        except (OSError, ValueError):  # stderr closed or gone: as logging's handleError
            pass


class _Stderr(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each write, not as it was at configure time: a
    test runner swaps it per test and closes the old one (the writer then printed "I/O
    operation on closed file" for the later tests' lines, and lost them)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass  # StreamHandler.__init__ and setStream assign it


_queue: queue.SimpleQueue = queue.SimpleQueue()
_writer = _BatchingListener(_queue)  # its thread formats and writes
_enqueue: _Enqueue | None = None  # the handler configure_logging installed last


def enqueue_directly(logger: logging.Logger, item: object) -> bool:
    """Queue `item` (something with `render` and `record`) for the writer thread if
    `logger`'s records would reach nothing but it: no filter on `logger`, no handler on
    the way but convserve's own. False: the caller logs the usual way."""
    if logger.filters or logger.disabled:
        return False
    node: logging.Logger | None = logger
    while node is not None and not node.handlers and node.propagate:
        node = node.parent  # type: ignore[assignment]
    if node is None or node.propagate or _enqueue is None or node.handlers != [_enqueue]:
        return False
    _queue.put(item)
    return True


def _start_writer(handler: logging.Handler) -> None:
    _writer.handlers = (handler,)
    if _writer._thread is None:  # once per process; flushed and stopped at exit
        _writer.start()
        atexit.register(_writer.stop)


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Idempotent: replaces the handlers of our loggers, leaves the root logger alone.

    Lines are formatted and written by one writer thread (`_Enqueue`), in order.
    """
    # what no line of ours shows is not gathered per record (the logging HOWTO's
    # "Optimization"): the caller's file and line walked the stack, ~15 us per access line
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = _Stderr()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    _start_writer(handler)
    global _enqueue
    enqueue = _enqueue = _Enqueue(_queue)
    for name in ("convserve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [enqueue] if name != "uvicorn.error" else []
        logger.setLevel(level.upper())
        logger.propagate = name == "uvicorn.error"
