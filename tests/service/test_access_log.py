"""The access line's direct lane writes what the formatters would, and steps aside
for anything else listening."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from service import access_log
from service.access_log import AccessLine, log_access
from service.logging import JSONFormatter, TextFormatter, configure_logging

LINES = [
    AccessLine(1764779759.3304, "127.0.0.1", "POST", "/predict", 200, 0.0023449, "a" * 32,
               "/predict", "127.0.0.1"),
    AccessLine(1764779759.9999, "-", "GET", "/x\n2026-01-01 INFO forged\u2028", 404, 1.5,
               "rid-1", "unmatched", None),
    AccessLine(1700000000.0, "::1", "POST", "/predict\x7f\t", 499, 0.0, "r", "/predict", "::1"),
]  # fmt: skip


@pytest.mark.parametrize("formatter", [TextFormatter(), JSONFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("line", LINES)
def test_the_direct_line_is_the_formatters_line(
    formatter: logging.Formatter, line: AccessLine
) -> None:
    assert line.render(formatter) == formatter.format(line.record())


def test_the_record_is_what_log_info_made() -> None:
    line = LINES[0]
    record = line.record()
    assert record.getMessage() == "127.0.0.1 POST /predict 200 2.3ms id=" + "a" * 32
    assert (record.name, record.levelno, record.created) == (
        "convserve.access",
        logging.INFO,
        line.created,
    )
    assert (record.route, record.status, record.duration_ms) == ("/predict", 200, 2.345)


def test_an_unknown_formatter_gets_no_direct_line() -> None:
    assert LINES[0].render(logging.Formatter()) is None


def _wait_for(capfd: pytest.CaptureFixture[str], mark: str) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not seen:
        seen = [x for x in capfd.readouterr().err.splitlines() if mark in x]
        time.sleep(0.02)
    return seen


def test_the_server_writes_direct_lines_escaped(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    scope = {"client": ("10.0.0.7", 5), "method": "GET", "path": "/direct-mark\nforged"}
    log_access(scope, 404, 0.0012, "req-1", "unmatched")
    (line,) = _wait_for(capfd, "direct-mark")
    assert line.endswith(
        " INFO convserve.access: 10.0.0.7 GET /direct-mark\\x0aforged 404 1.2ms id=req-1"
    )


def test_json_lines_have_the_request_fields(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        log_access({"client": None, "method": "POST", "path": "/json-mark"}, 200, 0.5, "r2", "-")
        (line,) = _wait_for(capfd, "json-mark")
    finally:
        configure_logging("text", "info")
    doc = json.loads(line)
    assert doc["message"] == "- POST /json-mark 200 500.0ms id=r2"
    assert (doc["client"], doc["status"], doc["duration_ms"], doc["route"]) == (
        None,
        200,
        500.0,
        "-",
    )


def test_an_added_handler_gets_the_record(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    access_log.log.addHandler(handler)
    try:
        scope = {"client": ("1.2.3.4", 1), "method": "GET", "path": "/added-mark"}
        log_access(scope, 200, 0.001, "r3", "/h")
    finally:
        access_log.log.removeHandler(handler)
    doc = json.loads(stream.getvalue())
    assert (doc["request_id"], doc["path"], doc["client"]) == ("r3", "/added-mark", "1.2.3.4")
    (line,) = _wait_for(capfd, "added-mark")  # and the server's own line, as before
    assert line.endswith("1.2.3.4 GET /added-mark 200 1.0ms id=r3")


def test_enqueue_directly_only_when_nothing_else_listens(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from service.logging import enqueue_directly

    configure_logging("text", "warning")
    logger = logging.getLogger("convserve.access")
    assert enqueue_directly(logger, LINES[0]) is True
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        assert enqueue_directly(logger, LINES[0]) is False
    finally:
        logger.removeHandler(handler)
    logger.addFilter(lambda record: True)
    try:
        assert enqueue_directly(logger, LINES[0]) is False
    finally:
        logger.filters.clear()
    parent = logging.getLogger("convserve")
    parent.propagate = True
    try:
        assert enqueue_directly(logger, LINES[0]) is False  # the root's handlers see it too
    finally:
        parent.propagate = False
    configure_logging("text", "info")


def test_a_line_that_cannot_be_rendered_still_arrives(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing render must not end the writer thread (every later line would be lost)."""
    configure_logging("text", "info")

    def broken(self: AccessLine, formatter: logging.Formatter | None) -> str | None:
        raise RuntimeError("render failed")

    monkeypatch.setattr(AccessLine, "render", broken)
    log_access({"client": None, "method": "GET", "path": "/broken-mark"}, 200, 0.002, "r4", "-")
    (line,) = _wait_for(capfd, "broken-mark")
    assert line.endswith("- GET /broken-mark 200 2.0ms id=r4")
    monkeypatch.undo()
    log_access({"client": None, "method": "GET", "path": "/after-mark"}, 200, 0.002, "r5", "-")
    assert _wait_for(capfd, "after-mark")
