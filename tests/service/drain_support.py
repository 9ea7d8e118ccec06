"""Helpers for the drain tests: an HTTP request held in flight, so a drain cannot end early."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx


@contextmanager
def held_upload(url: str, png: bytes) -> Iterator[Callable[[], bytes]]:
    """A /predict whose upload stops half-way: an HTTP request in flight that keeps the
    drain going until the test sends the rest (the returned function; it gives the answer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(png)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + png[: len(png) // 2])

    def finish() -> bytes:
        sock.sendall(png[len(png) // 2 :])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer

    try:
        yield finish
    finally:
        sock.close()


def in_flight(url: str) -> float:
    """convserve_requests_in_flight from a real scrape, less the scrape itself."""
    text = httpx.get(url + "/metrics", timeout=10).text
    (value,) = re.findall(r"^convserve_requests_in_flight (\S+)$", text, re.MULTILINE)
    return float(value) - 1
