"""Connection-level bounds over real sockets: header size, header and body read
deadlines, the connection cap; and what a crafted request can do to the log and
to /metrics. One server process (its own RSS is measured) with short deadlines."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.hardening_support import (
    connect,
    healthz_latency,
    peak_rss_growth,
    read_until_closed,
    status_of,
)
from tests.service.serving import ServerProcess

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 8
BODY_BUDGET = 8 * 1024 * 1024
KEY = "schlüssel-ключ"  # non-ASCII: must match when sent as UTF-8


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(
        "--header-timeout-s",
        str(HEADER_TIMEOUT_S),
        "--body-timeout-s",
        str(BODY_TIMEOUT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--max-inflight-body-bytes",
        str(BODY_BUDGET),
        "--log-level",
        "info",
        env={"CONVSERVE_API_KEY": KEY},
    )
    try:
        yield proc.start(timeout=60)
    finally:
        proc.terminate()
        try:
            proc.proc.wait(30)
        finally:
            proc.stop()


def _send_slowly(sock, parts: list[bytes], every_s: float) -> threading.Thread:
    def run() -> None:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:
                return
            time.sleep(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "convserve_requests_in_flight":
            return sum(s.value for s in family.samples)
    raise AssertionError("no in-flight gauge")


def test_headers_over_the_limit_get_431(server: ServerProcess) -> None:
    sock = connect(server.url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    response = read_until_closed(sock)
    sock.close()
    assert status_of(response) == 431, response[:200]
    assert b'"headers_too_large"' in response


def test_16_mib_of_headers_cost_no_memory(server: ServerProcess) -> None:
    """Before: 200 and RSS +220 MiB. Now the connection is refused after the limit."""
    line = b"X-a: b\r\n"  # many small headers: a Python tuple each
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + line * (16 * 1024 * 1024 // len(line))
    with peak_rss_growth(server.proc.pid) as rss, healthz_latency(server.url) as health:
        start = time.monotonic()
        sock = connect(server.url)
        sender = _send_slowly(sock, [request], 0)
        response = read_until_closed(sock)
        elapsed = time.monotonic() - start
        sender.join(30)
        sock.close()
    assert status_of(response) in (431, None), response[:200]  # None: reset while sending
    assert elapsed < 10, elapsed
    assert rss["mib"] < 40, rss
    assert health["max_ms"] < 1000, health
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_headers_at_a_line_per_second_are_cut_off(server: ServerProcess) -> None:
    sock = connect(server.url)
    start = time.monotonic()
    lines = [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 60
    _send_slowly(sock, lines, 0.5)
    response = read_until_closed(sock)
    elapsed = time.monotonic() - start
    sock.close()
    assert status_of(response) == 408, response[:200]
    assert HEADER_TIMEOUT_S - 0.1 <= elapsed < HEADER_TIMEOUT_S + 5, elapsed


def test_a_silent_connection_is_closed(server: ServerProcess) -> None:
    sock = connect(server.url)
    start = time.monotonic()
    response = read_until_closed(sock)
    sock.close()
    assert status_of(response) == 408
    assert time.monotonic() - start < HEADER_TIMEOUT_S + 5


def test_a_body_at_a_byte_per_second_is_cut_off(server: ServerProcess) -> None:
    """The connection and its in-flight slot are freed at the body deadline."""
    sock = connect(server.url)
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: 1000\r\nX-API-Key: {KEY}\r\n\r\n"
    ).encode()
    start = time.monotonic()
    _send_slowly(sock, [head] + [b"\x89"] * 60, 0.5)
    response = read_until_closed(sock)
    elapsed = time.monotonic() - start
    sock.close()
    assert status_of(response) == 408, response[:200]
    assert BODY_TIMEOUT_S - 0.1 <= elapsed < BODY_TIMEOUT_S + 5, elapsed
    deadline = time.monotonic() + 10
    while _in_flight(server.url) > 1:  # 1: this scrape
        assert time.monotonic() < deadline, "the slow request still holds its slot"
        time.sleep(0.1)


def test_connections_beyond_the_cap_get_503(server: ServerProcess) -> None:
    idle = [connect(server.url) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # accepted by the server
        with httpx.Client(timeout=10) as c:
            assert c.get(server.url + "/healthz").status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def _status_with(server: ServerProcess, header: bytes) -> int | None:
    """GET /openapi.json with one raw header line (httpx refuses e.g. `Bearer `)."""
    sock = connect(server.url)
    head = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    sock.sendall(head + header + b"\r\n\r\n")
    status = status_of(read_until_closed(sock))
    sock.close()
    return status


def test_api_key_compares_bytes_and_refuses_empty_headers(server: ServerProcess) -> None:
    key = KEY.encode()
    assert _status_with(server, b"X-API-Key: " + key) == 200
    assert _status_with(server, b"Authorization: Bearer " + key) == 200
    assert _status_with(server, b"X-Nothing: 1") == 401
    assert _status_with(server, b"X-API-Key: ") == 401
    assert _status_with(server, b"Authorization: Bearer ") == 401
    assert _status_with(server, b"Authorization: Bearer") == 401
    assert _status_with(server, b"X-API-Key: " + key[:-1]) == 401
    assert _status_with(server, b"X-API-Key: " + KEY.encode("utf-8", "replace")[:-2]) == 401


def test_a_newline_in_the_path_cannot_forge_a_log_line(server: ServerProcess) -> None:
    forged = "2026-01-01 00:00:00,000 INFO convserve.access: 10.0.0.1 GET /admin 200"
    sock = connect(server.url)
    target = "/nothing%0a" + forged.replace(" ", "%20") + "%0d%1b[2J"
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status_of(read_until_closed(sock)) == 404
    sock.close()
    deadline = time.monotonic() + 10
    while "/nothing" not in server.output:
        assert time.monotonic() < deadline, server.output[-2000:]
        time.sleep(0.05)
    lines = server.output.splitlines()
    assert not any(line.startswith(forged) for line in lines)
    logged = next(line for line in lines if "/nothing" in line)
    assert "/nothing\\x0a2026-01-01" in logged and "\\x0d\\x1b[2J" in logged


def test_unknown_methods_share_one_metrics_label(server: ServerProcess) -> None:
    with httpx.Client(timeout=10) as c:
        for method in ("PROPFIND", "MKCOL", "PURGE"):
            assert c.request(method, server.url + "/healthz").status_code == 405
        text = c.get(server.url + "/metrics").text
    methods = set(re.findall(r'convserve_requests_total\{[^}]*method="([^"]*)"', text))
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}


def test_an_empty_api_key_refuses_to_start() -> None:
    proc = ServerProcess(env={"CONVSERVE_API_KEY": ""})
    try:
        assert proc.proc.wait(60) == 2
    finally:
        proc.stop()
    assert "API key is empty" in proc.output


def test_running_without_a_key_says_so() -> None:
    proc = ServerProcess()
    try:
        proc.start(timeout=60)
        assert "no API key is set" in proc.output
    finally:
        proc.stop()


def test_bodies_in_flight_share_one_budget(server: ServerProcess) -> None:
    """Without it, max_connections x max_body_bytes (16 GiB) could be held at once."""
    size = 4 * 1024 * 1024
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {size}\r\nX-API-Key: {KEY}\r\n\r\n"
    ).encode()
    holders = [connect(server.url) for _ in range(2)]
    try:
        for sock in holders:  # 2 x 3.5 MiB of the 8 MiB budget, bodies not finished
            sock.sendall(head + b"\0" * (size - size // 8))
        time.sleep(0.5)
        r = httpx.post(
            server.url + "/predict",
            content=b"\0" * size,
            headers={"Content-Type": "image/png", "X-API-Key": KEY.encode()},
            timeout=30,
        )
        assert r.status_code == 503, r.text[:300]
        assert r.json()["error"]["code"] == "queue_full"
        assert r.headers["Retry-After"] == "1"
    finally:
        for sock in holders:
            sock.close()
    time.sleep(0.5)  # the holders' requests end (499): their share is given back
    r = httpx.post(
        server.url + "/predict",
        content=b"\0" * size,
        headers={"Content-Type": "image/png", "X-API-Key": KEY.encode()},
        timeout=30,
    )
    assert r.status_code == 400, r.text[:300]  # zeros are no image: read and refused


def _answered(url: str, route: str, status: int) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "convserve_requests_total" and labels.get("route") == route:
                total += sample.value if labels.get("status") == str(status) else 0
    return total


def test_connection_layer_answers_are_counted(server: ServerProcess) -> None:
    """Before: 431, 408 and the connection cap's 503 never reached /metrics (a body 408
    showed as a 499): shedding slow or oversized clients was invisible to operations."""
    before = {s: _answered(server.url, "-", s) for s in (431, 408, 503)}
    body_late = _answered(server.url, "/predict", 408)
    test_headers_over_the_limit_get_431(server)
    test_a_silent_connection_is_closed(server)
    test_connections_beyond_the_cap_get_503(server)
    test_a_body_at_a_byte_per_second_is_cut_off(server)
    for status, count in before.items():
        assert _answered(server.url, "-", status) == count + 1, status
    assert _answered(server.url, "/predict", 408) == body_late + 1
