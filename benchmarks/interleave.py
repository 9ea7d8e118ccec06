"""Interleaved wrk runs against servers already running: medians per server.

For quick A/B checks between two or more servers started by hand (two
checkouts, two settings, convserve against `bare_server.py`): each round runs
wrk once against every target in turn, so drift of a shared machine hits all
of them alike. Per target: median requests/s (with the range), p50,
and the server's CPU per request, read from /proc for every process whose
environment names the port (CONVSERVE_PORT=, or BENCH_PORT= for the others).

    python -m benchmarks.interleave --concurrency 32 9001 9002:/inline --rounds 5
    python -m benchmarks.interleave --body /tmp/mp8.body --content-type 'multipart/...' 9001

A target is PORT or PORT:PATH (default path /predict).

Start convserve targets with CONVSERVE_GRPC_PORT=0 (two servers cannot both
take gRPC's 8001: the second stops) and one after the other: servers started
together tune their execution shape on the same CPUs at once, measure each
other, and may choose differently than alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchmarks import wrk
from benchmarks.photo import PHOTO
from benchmarks.servers import CLOCK_TICKS, STIME, UTIME, stat_fields


def server_pids(port: str) -> list[int]:
    """Processes started with CONVSERVE_PORT or BENCH_PORT = `port` (workers inherit it)."""
    marks = (f"CONVSERVE_PORT={port}\0".encode(), f"BENCH_PORT={port}\0".encode())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if any(mark in env for mark in marks):
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = stat_fields(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue
        total += int(fields[UTIME]) + int(fields[STIME])
    return total / CLOCK_TICKS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("targets", nargs="+", help="PORT or PORT:PATH")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--body", type=Path, default=PHOTO)
    p.add_argument("--content-type", default="image/jpeg")
    args = p.parse_args()
    body = args.body.read_bytes()
    targets = [[*t.split(":", 1), "/predict"][:2] for t in args.targets]
    pids = {port: server_pids(port) for port, _ in targets}
    runs: dict[str, list[tuple[float, float, float]]] = {f"{p}{q}": [] for p, q in targets}
    for _ in range(args.rounds):
        for port, path in targets:
            before = cpu_seconds(pids[port])
            url = f"http://127.0.0.1:{port}{path}"
            run = wrk.run_wrk(url, body, args.content_type, concurrency=args.concurrency,
                              duration=args.seconds, warmup=0)  # fmt: skip
            used = cpu_seconds(pids[port]) - before
            n = max(run["requests"], 1)
            runs[f"{port}{path}"].append((run["requests_per_s"], run["p50_ms"], used / n * 1e6))
    for name, results in runs.items():
        rps, p50, cpu = zip(*results, strict=True)
        print(f"{name} ({len(pids[name.split('/')[0]])} processes) c={args.concurrency}: "
              f"req/s {statistics.median(rps):.1f} [{min(rps):.0f}-{max(rps):.0f}]  "
              f"p50 {statistics.median(p50):.2f} ms  "
              f"server CPU {statistics.median(cpu):.0f} us/request")  # fmt: skip


if __name__ == "__main__":
    main()
