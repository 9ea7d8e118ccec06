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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

from benchmarks.photo import PHOTO

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


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
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / _TICK


def wrk_once(url: str, concurrency: int, seconds: int, env: dict[str, str]) -> dict:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s",
            "-s", str(REPO / "benchmarks/post.lua"), url]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.split("WRKJSON ", 1)[1])


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
    env = dict(os.environ, WRK_BODY=str(args.body), WRK_CONTENT_TYPE=args.content_type)
    targets = [[*t.split(":", 1), "/predict"][:2] for t in args.targets]
    pids = {port: server_pids(port) for port, _ in targets}
    runs: dict[str, list[tuple[float, float, float]]] = {f"{p}{q}": [] for p, q in targets}
    for _ in range(args.rounds):
        for port, path in targets:
            before = cpu_seconds(pids[port])
            raw = wrk_once(f"http://127.0.0.1:{port}{path}", args.concurrency, args.seconds, env)
            used = cpu_seconds(pids[port]) - before
            n = max(raw["requests"], 1)
            rps = raw["requests"] / raw["duration_us"] * 1e6
            runs[f"{port}{path}"].append((rps, raw["p50_us"] / 1000, used / n * 1e6))
    for name, results in runs.items():
        rps, p50, cpu = zip(*results, strict=True)
        print(f"{name} ({len(pids[name.split('/')[0]])} processes) c={args.concurrency}: "
              f"req/s {statistics.median(rps):.1f} [{min(rps):.0f}-{max(rps):.0f}]  "
              f"p50 {statistics.median(p50):.2f} ms  "
              f"server CPU {statistics.median(cpu):.0f} us/request")  # fmt: skip


if __name__ == "__main__":
    main()
