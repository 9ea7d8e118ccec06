"""The load generator against a real convserve over loopback: it counts what it should.

No timed assertions: only that responses are parsed, counted and classified.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from benchmarks import loadgen, servers
from benchmarks.photo import PHOTO

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def convserve(tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    env = {"CONVSERVE_PROVIDERS": "cpu", "CONVSERVE_MAX_BATCH_SIZE": "8"}
    with servers.convserve(ROOT / "models", "digits", logdir=logs, env=env) as server:
        yield server


def test_raw_jpeg_requests_are_all_answered(convserve: servers.Server) -> None:
    url = f"{convserve.url}/predict"
    request = loadgen.build_request(url, PHOTO.read_bytes(), "image/jpeg")
    r = loadgen.run_load(
        url, request, concurrency=3, duration=0.5, warmup=0.1, expect=b'"predictions"'
    )
    assert r["responses_total"] > 0 and r["errors_total"] == 0
    assert r["errors"] == 0 and r["statuses"] == ({"200": r["requests"]} if r["requests"] else {})
    assert r["images_per_s"] == r["requests_per_s"]
    if r["requests"]:
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_multipart_body_is_a_batch_the_server_accepts(convserve: servers.Server) -> None:
    photo = PHOTO.read_bytes()
    body, ctype = loadgen.multipart_body([(f"{i}.jpg", photo, "image/jpeg") for i in range(3)])
    answer = httpx.post(f"{convserve.url}/predict", content=body, headers={"Content-Type": ctype})
    assert answer.status_code == 200
    assert [p["filename"] for p in answer.json()["predictions"]] == ["0.jpg", "1.jpg", "2.jpg"]
    url = f"{convserve.url}/predict"
    r = loadgen.run_load(
        url,
        loadgen.build_request(url, body, ctype),
        concurrency=2,
        duration=0.4,
        warmup=0.1,
        images_per_request=3,
        processes=2,
    )
    assert r["errors_total"] == 0 and r["responses_total"] > 0
    assert r["images_per_s"] == pytest.approx(3 * r["requests_per_s"], rel=1e-6)
    assert r["client_processes"] == 2


def test_error_answers_are_counted_as_errors_not_latencies(convserve: servers.Server) -> None:
    url = f"{convserve.url}/predict"
    request = loadgen.build_request(url, b"definitely not an image", "image/jpeg")
    r = loadgen.run_load(url, request, concurrency=1, duration=0.3, warmup=0.0)
    assert r["requests"] == 0 and r["p50_ms"] is None
    assert r["errors_total"] > 0 and set(r["statuses"]) <= {"400"}
    assert r["failures"] and r["failures"][0].startswith("400")


def test_chunked_and_content_length_responses_parse() -> None:
    async def parse(raw: bytes) -> tuple[int, bytes, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await loadgen._read_response(reader)

    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"
    )
    assert asyncio.run(parse(chunked)) == (200, b"abcdef", False)
    sized = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz"
    assert asyncio.run(parse(sized)) == (503, b"xyz", True)


def test_a_server_that_is_not_there_is_reported_not_fatal() -> None:
    url = f"http://127.0.0.1:{servers.free_port()}/predict"  # nothing listens here
    request = loadgen.build_request(url, b"x", "image/jpeg")
    r = loadgen.run_load(url, request, concurrency=2, duration=0.3, warmup=0.0)
    assert r["requests"] == 0 and r["responses_total"] == 0 and r["errors_total"] > 0
    assert r["failures"][0].startswith("connection error")
