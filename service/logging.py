"""Log set-up: plain text or one JSON object per line, for the convserve and uvicorn loggers."""

from __future__ import annotations

import copy
import json
import logging
import sys
import time

from service import tracing

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Control characters (and Unicode line breaks) in the arguments of a text log line are
# escaped: a request path with %0a must not write a forged second line. The message
# template is the code's own (uvicorn logs a start-up traceback as one); tabs stay.
# JSON escapes everything itself.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c != 9} | {
    c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)
}


def _escaped(value: object) -> object:
    if isinstance(value, str | BaseException):
        return str(value).translate(_ESCAPES)
    return value


class TextFormatter(logging.Formatter):
    """`time level logger: message`; request data in the arguments cannot break the line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            record = copy.copy(record)  # other handlers see the record as it was
            if isinstance(record.args, dict):
                record.args = {k: _escaped(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_escaped(v) for v in record.args)
        return super().format(record)


class JSONFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, with --workers > 1
        }
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


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Idempotent: replaces the handlers of our loggers, leaves the root logger alone."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    for name in ("convserve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name != "uvicorn.error" else []
        logger.setLevel(level.upper())
        logger.propagate = name == "uvicorn.error"
