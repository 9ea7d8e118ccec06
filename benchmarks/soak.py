"""Soak: many requests, good and hostile mixed, against a server this script starts.

    .venv/bin/python benchmarks/soak.py [--requests 100000] [--concurrency 64]

Starts `python -m service` on 127.0.0.1 (a free port, the committed models),
sends `--requests` requests from `--concurrency` connections, one in three of
them hostile (garbage, truncated and bomb images, JSON floods, deep nesting,
oversized headers, bad base64, unknown models and media types...), and prints,
every 10% of the run: the server's RSS, 5xx so far, transport errors, and the
p50/p99 latency of that slice. The target (issue 10): RSS growth under 5% after
the first slice, zero 5xx. Exits 1 if either is missed. Not a test: minutes long.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SEVEN = (ROOT / "tests" / "data" / "seven.png").read_bytes()

Request = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body


def _jpeg(size: int, extra_scans: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), 100).save(buf, format="JPEG", progressive=True)
    data = buf.getvalue()
    start, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[start:end] * extra_scans + data[end:]


def _multipart(parts: list[bytes]) -> tuple[dict[str, str], bytes]:
    body = b"".join(
        b'--soak\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    return {"Content-Type": "multipart/form-data; boundary=soak"}, body + b"--soak--\r\n"


def requests() -> tuple[list[Request], list[Request]]:
    """(good, hostile) request templates."""
    png = {"Content-Type": "image/png"}
    js = {"Content-Type": "application/json"}
    b64 = base64.b64encode(SEVEN).decode()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    noise_png = io.BytesIO()
    Image.fromarray(noise).save(noise_png, format="PNG")
    v2 = {
        "inputs": [
            {"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "data": [0.5] * 1024}
        ]
    }
    good: list[Request] = [
        ("POST", "/predict", png, SEVEN),
        ("POST", "/predict", png, SEVEN),
        ("POST", "/predict", png, noise_png.getvalue()),
        ("POST", "/predict?top_k=3", *_multipart([SEVEN] * 4)),
        ("POST", "/predict", js, json.dumps({"instances": [{"b64": b64}] * 2}).encode()),
        ("POST", "/featuremaps?layer=conv2d_1", png, SEVEN),
        ("POST", "/v2/models/digits/infer", js, json.dumps(v2).encode()),
        ("GET", "/models", {}, b""),
        ("GET", "/healthz", {}, b""),
    ]
    empty_chunk = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    hostile: list[Request] = [
        ("POST", "/predict", png, os.urandom(2048)),
        ("POST", "/predict", png, SEVEN[: len(SEVEN) // 2]),
        ("POST", "/predict", {"Content-Type": "image/jpeg"}, _jpeg(512, extra_scans=200)),
        ("POST", "/predict", png, SEVEN[:33] + empty_chunk * 20_000 + SEVEN[33:]),
        ("POST", "/predict", js, b'{"instances": [' + b"{}, " * 250_000 + b"{}]}"),
        ("POST", "/predict", js, b"[" * 50_000),
        ("POST", "/predict", js, b'{"instances": [{"b64": "!!not base64!!"}]}'),
        ("POST", "/predict", js, json.dumps({"instances": [{"b64": b64}] * 65}).encode()),
        ("POST", "/predict", {"Content-Type": "text/plain"}, b"hello"),
        ("POST", "/predict?model=nope", png, SEVEN),
        ("POST", "/predict?top_k=0", png, SEVEN),
        ("POST", "/predict", *_multipart([b""])),
        ("POST", "/predict", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\n"),
        ("GET", "/healthz", {"X-Pad": "a" * 100_000}, b""),
        ("POST", "/v2/models/digits/infer", js, b'{"inputs": [{"name": "image"}]}'),
        (
            "POST",
            "/v2/models/digits/infer",
            {**js, "Content-Encoding": "gzip"},
            zlib.compress(b'{"inputs": [' + b"{}," * 100_000 + b"{}]}"),
        ),
        ("PROPFIND", "/predict", {}, b""),
        ("GET", "/nothing%0aFAKE%20LINE", {}, b""),
    ]
    return good, hostile


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:  # a free port (warning-level logs do not print it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSERVE_")}
    env.update({"PYTHONPATH": str(ROOT), "CONVSERVE_MODEL_DIR": str(ROOT / "models")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(url: str, pid: int, total: int, concurrency: int) -> int:
    good, hostile = requests()
    mix = [*good, *good, *hostile]  # about one request in three is hostile
    sent = 0
    statuses: dict[int, int] = {}
    errors = 0
    window: list[float] = []
    slice_size = max(1, total // 10)
    first_rss = None
    lock = asyncio.Lock()
    start = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, errors, first_rss
        while True:
            async with lock:
                if sent >= total:
                    return
                index = sent
                sent += 1
            method, path, headers, body = mix[index % len(mix)]
            began = time.perf_counter()
            try:
                r = await client.request(method, url + path, headers=headers, content=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.TransportError:
                errors += 1  # e.g. 431: the server closes the connection
            window.append(time.perf_counter() - began)
            if (index + 1) % slice_size == 0:
                lat = np.array(window) * 1000
                window.clear()
                rss = rss_mib(pid)
                first_rss = first_rss or rss
                fives = sum(n for s, n in statuses.items() if s >= 500)
                print(
                    f"{index + 1:>7} requests  RSS {rss:7.1f} MiB  5xx {fives}  "
                    f"transport errors {errors}  p50 {np.percentile(lat, 50):6.1f} ms  "
                    f"p99 {np.percentile(lat, 99):7.1f} ms  {time.monotonic() - start:6.0f} s",
                    flush=True,
                )

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    fives = sum(n for s, n in statuses.items() if s >= 500)
    final = rss_mib(pid)
    growth = (final - first_rss) / first_rss * 100 if first_rss else float("nan")
    print(f"statuses: {dict(sorted(statuses.items()))}")
    print(
        f"RSS after the first slice {first_rss:.1f} MiB, at the end {final:.1f} MiB "
        f"({growth:+.1f}%); 5xx: {fives}; {total / (time.monotonic() - start):.0f} requests/s"
    )
    return 0 if fives == 0 and growth < 5 else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    proc, url = start_server()
    try:
        print(f"server pid {proc.pid} at {url}; RSS {rss_mib(proc.pid):.1f} MiB before the run")
        code = asyncio.run(run(url, proc.pid, args.requests, args.concurrency))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
