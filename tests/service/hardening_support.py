"""Measuring a server process from outside: its children, its RSS and its peak RSS,
/healthz latency while something else runs, and raw sockets for what HTTP clients
cannot send (Linux /proc)."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families


def children(pid: int) -> list[int]:
    """The direct children of `pid` (all its threads' children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        out.extend(int(p) for p in text.split())
    return out


def worker_processes(pid: int) -> list[int]:
    """uvicorn's worker processes among `pid`'s children (not multiprocessing's tracker)."""
    return [p for p in children(pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


@contextmanager
def peak_rss_growth(pid: int) -> Iterator[dict[str, float]]:
    """`out["mib"]`: how far the peak RSS rose above the RSS at entry, while inside.

    Resets the kernel's high-water mark (clear_refs 5) at entry, reads it at exit:
    no sample can miss a short peak."""
    out: dict[str, float] = {}
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = rss_mib(pid)
    yield out
    out["mib"] = _status_kib(pid, "VmHWM") / 1024 - before


@contextmanager
def healthz_latency(url: str) -> Iterator[dict[str, float]]:
    """`out["max_ms"]`: the slowest /healthz answer while inside (probing every 20 ms)."""
    out = {"max_ms": 0.0, "probes": 0}
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                start = time.perf_counter()
                c.get(url + "/healthz")
                out["max_ms"] = max(out["max_ms"], (time.perf_counter() - start) * 1000)
                out["probes"] += 1
                stop.wait(0.02)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, from a /metrics scrape."""
    total = 0.0
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def slow_jpeg(side: int, seed: int = 0) -> bytes:
    """A valid progressive JPEG of side x side pixels with 62 scans (under the limit of
    64): small on the wire, slow to decode (6000 px: ~5 MB, ~1 s here)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (side // 8, side // 8, 3), np.uint8)
    picture = Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90, progressive=True)
    data = buf.getvalue()
    start, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")  # the last scan, repeated
    return data[:end] + data[start:end] * (62 - data.count(b"\xff\xda")) + data[end:]


def multipart(blobs: list[bytes], media_type: str = "image/jpeg") -> tuple[bytes, str]:
    """A multipart/form-data body with one `file` part per blob, and its Content-Type."""
    boundary = "convserve-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n'
        f"Content-Type: {media_type}\r\n\r\n".encode()
        + blob
        + b"\r\n"
        for i, blob in enumerate(blobs)
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
