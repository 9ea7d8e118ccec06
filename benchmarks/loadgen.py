"""A lean HTTP/1.1 load generator: asyncio, raw sockets, keep-alive, optionally several processes.

Why not httpx/aiohttp: their per-request overhead in Python is larger than the
server's for a tiny model, so the client would measure itself. Here each
connection writes one pre-built request and parses the response with a few
bytes operations. Used where `wrk` is absent (the GPU machine) and as the
default elsewhere, so numbers from both machines come from the same client.

`python -m benchmarks.loadgen --url http://127.0.0.1:8000/predict --body photo.jpg
--content-type image/jpeg --concurrency 32 --duration 5` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BOUNDARY = "convservebenchboundary7f3a"


def multipart_body(parts: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """(filename, data, content type) parts named `file` -> body and its Content-Type."""
    chunks: list[bytes] = []
    for filename, data, ctype in parts:
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={BOUNDARY}"


def _stop_resource_tracker() -> None:
    """The helper process "spawn" starts would otherwise live as long as this one (a
    caller's leftover process); the next pool starts a new one. Private API: best effort."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


def build_request(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> bytes:
    """The complete bytes of one keep-alive POST."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Shard:
    """What one load process does: `connections` loops between start and stop (epoch seconds)."""

    host: str
    port: int
    request: bytes
    connections: int
    start: float  # measurement window opens (connections begin earlier, at warm-up)
    stop: float
    warmup_from: float
    expect: bytes = b""  # a substring every 200 body must contain


@dataclass
class ShardResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    ok_total: int = 0  # also outside the window (warm-up, tail): proof of life, not a rate
    bad_total: int = 0  # non-200 or unexpected answers
    broken: int = 0  # connection errors (refused, reset, timed out, garbled)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One response: status, body, whether the server wants the connection closed."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = -1, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if chunked:
        pieces = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            pieces.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        return status, b"".join(p[:-2] for p in pieces), close
    body = await reader.readexactly(length) if length >= 0 else await reader.read()
    return status, body, close or length < 0


async def _connection(shard: Shard, result: ShardResult) -> None:
    """One keep-alive connection posting back to back until the window closes.

    A broken connection is counted as an error and reopened (after a short pause, so a
    server that is down does not turn this into a busy loop).
    """
    await asyncio.sleep(max(0.0, shard.warmup_from - time.time()))
    reader = writer = None
    while time.time() < shard.stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(shard.host, shard.port)
            sent_wall = time.time()
            t0 = time.perf_counter()  # not loop.time(): uvloop's clock ticks in whole ms
            writer.write(shard.request)
            status, body, close = await asyncio.wait_for(_read_response(reader), timeout=60)
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            # IncompleteReadError is an EOFError; a garbled status line is a ValueError
            result.broken += 1
            if len(result.failures) < 5:
                result.failures.append(f"connection error: {exc!r}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        elapsed = time.perf_counter() - t0
        ok = status == 200 and (not shard.expect or shard.expect in body)
        result.ok_total += ok
        result.bad_total += not ok
        if not ok and len(result.failures) < 5:
            result.failures.append(f"{status}: {body[:300]!r}")
        # a response counts when it completes inside the window (whenever it was sent):
        # in steady state that is throughput x duration, with no bias against slow requests
        if shard.start <= sent_wall + elapsed <= shard.stop:
            result.statuses[status] += 1
            if ok:
                result.latencies_ms.append(elapsed * 1000.0)
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _run_shard_async(shard: Shard) -> ShardResult:
    result = ShardResult()
    await asyncio.gather(*(_connection(shard, result) for _ in range(shard.connections)))
    return result


def run_shard(shard: Shard) -> ShardResult:
    """Entry point of one load process (uvloop when installed: less client CPU per request)."""
    try:
        import uvloop

        return uvloop.run(_run_shard_async(shard))
    except ImportError:
        return asyncio.run(_run_shard_async(shard))


def summarize(latencies_ms: list[float], duration: float, images_per_request: int) -> dict:
    lat = sorted(latencies_ms)
    n = len(lat)

    def pct(p: float) -> float | None:
        return round(lat[min(n - 1, int(p / 100.0 * n))], 3) if n else None

    rps = n / duration if duration > 0 else 0.0
    return {
        "requests": n,
        "duration_s": round(duration, 3),
        "requests_per_s": round(rps, 2),
        "images_per_s": round(rps * images_per_request, 2),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": round(sum(lat) / n, 3) if n else None,
        "max_ms": round(lat[-1], 3) if n else None,
    }


def run_load(
    url: str,
    request: bytes,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    processes: int = 1,
    images_per_request: int = 1,
    expect: bytes = b"",
) -> dict:
    """Drive `url` with `concurrency` keep-alive connections spread over `processes` processes."""
    parts = urlsplit(url)
    processes = max(1, min(processes, concurrency))
    begin = time.time() + (0.5 if processes > 1 else 0.0)  # time for processes to start
    start = begin + warmup
    shards = [
        Shard(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 80,
            request=request,
            connections=concurrency // processes + (1 if i < concurrency % processes else 0),
            start=start,
            stop=start + duration,
            warmup_from=begin,
            expect=expect,
        )
        for i in range(processes)
    ]
    if processes == 1:
        results = [run_shard(shards[0])]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            results = list(pool.map(run_shard, shards))
        _stop_resource_tracker()
    latencies = [x for r in results for x in r.latencies_ms]
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update(r.statuses)
    failures = [f for r in results for f in r.failures][:10]
    summary = summarize(latencies, duration, images_per_request)
    summary.update(
        concurrency=concurrency,
        images_per_request=images_per_request,
        client="python",
        client_processes=processes,
        errors=sum(statuses.values()) - len(latencies) + sum(r.broken for r in results),
        responses_total=sum(r.ok_total + r.bad_total for r in results),
        errors_total=sum(r.bad_total + r.broken for r in results),
        connection_errors=sum(r.broken for r in results),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        failures=failures,
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lean keep-alive HTTP/1.1 POST load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--body", type=Path, required=True, help="file sent as the body or as each part"
    )
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument(
        "--multipart", type=int, default=0, help="send N copies as multipart `file` parts"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--expect", default="", help="substring every 200 body must contain")
    args = parser.parse_args(argv)
    data = args.body.read_bytes()
    if args.multipart:
        parts = [(f"{i}{args.body.suffix}", data, args.content_type) for i in range(args.multipart)]
        body, ctype = multipart_body(parts)
    else:
        body, ctype = data, args.content_type
    summary = run_load(
        args.url,
        build_request(args.url, body, ctype),
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.processes,
        images_per_request=max(1, args.multipart),
        expect=args.expect.encode(),
    )
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
