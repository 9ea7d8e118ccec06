"""Log lines are written by one writer thread: all of them, in order, escaped as before."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from service.logging import configure_logging


def wait_for(capfd: pytest.CaptureFixture[str], count: int) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen += [line for line in capfd.readouterr().err.splitlines() if "writer-test" in line]
        if len(seen) >= count:
            break
        time.sleep(0.02)
    return seen


def test_every_line_arrives_in_order_from_every_thread(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    log = logging.getLogger("convserve.test")

    def burst(tag: str) -> None:
        for i in range(300):
            log.info("writer-test %s %d", tag, i)

    threads = [threading.Thread(target=burst, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = wait_for(capfd, 600)
    assert len(lines) == 600
    for tag in "ab":
        numbers = [int(line.rsplit(" ", 1)[1]) for line in lines if f"writer-test {tag} " in line]
        assert numbers == list(range(300))


def test_arguments_are_still_escaped(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "info")
    logging.getLogger("convserve.test").info("writer-test %s", "forged\nsecond line")
    (line,) = wait_for(capfd, 1)
    assert line.endswith("writer-test forged\\x0asecond line")


def test_lines_go_to_stderr_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test runner swaps sys.stderr per test and closes the old one: the writer follows."""
    configure_logging("text", "info")
    swapped = io.StringIO()
    monkeypatch.setattr("sys.stderr", swapped)
    logging.getLogger("convserve.test").info("writer-test swapped")
    deadline = time.monotonic() + 10
    while "writer-test swapped" not in swapped.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "writer-test swapped" in swapped.getvalue()
