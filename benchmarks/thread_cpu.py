"""Each thread's CPU time and context switches per request, while wrk drives a running server.

The measure to trust when threads share a CPU (round 9 in benchmarks/README.md):
py-spy samples a thread that holds the GIL or waits for the CPU as busy, but
/proc counts the CPU each thread really used (utime + stime), how often it was
preempted (nonvoluntary switches) and how often it waited (voluntary). Figures
are per request served by the whole server: with N workers sharing the load,
one worker's request costs N times its threads' figures.

    python -m benchmarks.thread_cpu 9001 --concurrency 32 --seconds 10
    python -m benchmarks.thread_cpu 9001 --body /tmp/mp8.body --content-type 'multipart/...'

The server's processes are found as in benchmarks/interleave.py (CONVSERVE_PORT= or
BENCH_PORT= in their environment). Python's thread names come from `py-spy dump`
when py-spy is installed (a thread's OS name is only "python" before Python 3.14);
otherwise the main thread (the event loop) is named and the others go by their id.
Threads that start during the run (a pool's first jobs) are not counted: warm up first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from benchmarks import wrk
from benchmarks.interleave import server_pids
from benchmarks.photo import PHOTO
from benchmarks.servers import CLOCK_TICKS, STIME, UTIME, stat_fields

_TICK_US = 1e6 / CLOCK_TICKS


class Counters(NamedTuple):
    user: int  # clock ticks
    system: int
    voluntary: int
    involuntary: int


def thread_counters(pid: int) -> dict[int, Counters]:
    """Every thread of `pid` now (a thread that ends meanwhile is skipped)."""
    out = {}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = stat_fields(entry / "stat")
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        out[int(entry.name)] = Counters(
            int(fields[UTIME]),
            int(fields[STIME]),
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
        )
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's names for `pid`'s threads (py-spy dump); {} without py-spy."""
    if shutil.which("py-spy") is None:
        return {}
    try:
        dump = subprocess.run(
            ["py-spy", "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(t): n for t, n in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M)}


def report(before: dict, after: dict, names: dict, requests: int) -> list[str]:
    """One line per thread that ran, per request, and one total per process."""
    lines = []
    n = max(requests, 1)
    for pid in sorted(after):
        total = 0.0
        for tid, end in sorted(after[pid].items()):
            start = before.get(pid, {}).get(tid)
            if start is None:
                continue
            d = Counters(*(b - a for a, b in zip(start, end, strict=True)))
            cpu = (d.user + d.system) * _TICK_US / n
            total += cpu
            if cpu == 0 and d.voluntary < n // 10:
                continue  # idle all along
            name = names.get(tid) or ("main (event loop)" if tid == pid else "")
            lines.append(
                f"  {pid}/{tid:<8} {cpu:8.0f} us (user {d.user * _TICK_US / n:.0f}, sys "
                f"{d.system * _TICK_US / n:.0f})  switches: waited {d.voluntary / n:.2f}, "
                f"preempted {d.involuntary / n:.2f}  {name}"
            )
        lines.append(f"  {pid} all threads: {total:.0f} us per request")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("target", help="PORT or PORT:PATH (default path /predict)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--body", type=Path, default=PHOTO)
    p.add_argument("--content-type", default="image/jpeg")
    args = p.parse_args()
    port, path = [*args.target.split(":", 1), "/predict"][:2]
    pids = server_pids(port)
    if not pids:
        p.error(f"no process has CONVSERVE_PORT={port} or BENCH_PORT={port} in its environment")
    names = {tid: name for pid in pids for tid, name in thread_names(pid).items()}
    before = {pid: thread_counters(pid) for pid in pids}
    run = wrk.run_wrk(f"http://127.0.0.1:{port}{path}", args.body.read_bytes(),
                      args.content_type, concurrency=args.concurrency, duration=args.seconds,
                      warmup=0, threads=2)  # fmt: skip
    after = {pid: thread_counters(pid) for pid in pids}
    print(f"{port}{path} c={args.concurrency}: {run['requests']} requests, "
          f"{run['requests_per_s']:.1f} req/s; per request of the whole server:")  # fmt: skip
    print("\n".join(report(before, after, names, run["requests"])))


if __name__ == "__main__":
    main()
