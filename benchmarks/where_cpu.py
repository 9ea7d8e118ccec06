"""Where a server's event loop spends its time per request: py-spy samples, by category.

Starts convserve (from this checkout or `--src`), drives it with wrk at one
concurrency, records the server with `py-spy record --threads` at 100 Hz
(each sample pauses the server briefly: a low rate keeps that to ~1 %; not
idle samples) and sorts every event-loop sample by the innermost frame that names a
category (logging, metrics, the JSON answer, hand-offs to the decode pool and
the inference thread, Starlette/FastAPI layers, HTTP parsing and sending).
Prints microseconds of event-loop time per request for each, and the other
threads' busy time (decoding, onnxruntime) per request. Needs py-spy
(`pip install py-spy`) and wrk; Linux, run as a user that may ptrace.

    python -m benchmarks.where_cpu --model benchmarks/.cache/models/course256/1 --concurrency 1
    python -m benchmarks.where_cpu --src /tmp/older-checkout ...   # the same, another version
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks import http_bench, servers, wrk
from benchmarks.photo import PHOTO
from service.bundle import read_bundle

REPO = Path(__file__).resolve().parent.parent
# (category, substrings of a frame "function (file:line)"), innermost match wins; order = priority
CATEGORIES = [
    ("logging", ("logging/__init__.py", "service/logging.py", "logging/handlers.py")),
    ("metrics", ("prometheus_client",)),
    ("JSON answer", ("predictions_json", "json/encoder.py", "Classification.ranked")),
    ("hand-offs (pool, inference thread)", ("concurrent/futures", "call_soon_threadsafe",
                                            "service/batcher.py", "Decoder.run",
                                            "decode_then", "inference_thread.py")),
    ("request middleware, auth, fast path", ("service/middleware.py", "service/auth.py",
                                             "service/fastpath.py")),
    ("data plane, request parsing", ("service/dataplane.py", "service/routes/",
                                     "starlette/requests.py", "service/multipart.py")),
    ("Starlette/FastAPI layers", ("starlette/", "fastapi/")),
    ("HTTP parsing and sending", ("httptools_impl.py", "service/connection.py",
                                  "uvicorn/middleware")),
]  # fmt: skip


THREADS = [("MainThread", "event loop"), ("decode", "decode pool"),
           ("inference", "inference thread"), ("_monitor", "log writer")]  # fmt: skip


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in CATEGORIES:
            if any(m in frame for m in marks):
                return name
    return "uvloop itself (C: sockets, epoll, callbacks)"


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of every thread of `pid` (Linux /proc)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def summarize(raw: Path, cpu: dict[int, float], requests: int) -> dict:
    """CPU per request per thread kind (from /proc, exact), the event loop's split by the
    share of its py-spy samples in each category (wall-clock samples: an estimate)."""
    kinds: dict[int, str] = {}
    loop: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        tid = int(frames[0].split("(")[1].split(")")[0], 0)
        name = frames[0].split(":", 1)[-1]
        kinds[tid] = next((kind for mark, kind in THREADS if mark in name), name.strip())
        if kinds[tid] == "event loop":
            loop[category(frames[1:])] += int(count)
    per_kind: collections.Counter = collections.Counter()
    for tid, seconds in cpu.items():
        per_kind[kinds.get(tid, "threads py-spy never saw busy")] += seconds
    us = 1e6 / max(1, requests)
    total = sum(loop.values()) or 1
    main_us = per_kind["event loop"] * us
    unseen = {tid: round(seconds * us) for tid, seconds in cpu.items()
              if tid not in kinds and seconds > 0}  # fmt: skip
    return {
        "requests": requests,
        "cpu_us_per_request": {k: round(v * us) for k, v in per_kind.most_common()},
        "threads_py_spy_never_saw": unseen,  # native threads (onnxruntime's pool, ...)
        "event_loop_cpu_us_per_request_by_category": {
            k: round(main_us * v / total) for k, v in loop.most_common()
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", type=Path, default=REPO / "models/digits/1")
    p.add_argument("--src", type=Path, default=REPO, help="the checkout convserve runs from")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--server-env", action="append", default=["CONVSERVE_LOG_LEVEL=info"])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        raise SystemExit("py-spy not found: pip install py-spy")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    model = http_bench.inprocess.find_bundle(args.model)
    # one process: py-spy records one pid (the default, auto, runs one worker per CPU)
    env = {"CONVSERVE_PROVIDERS": "cpu", "CONVSERVE_WORKERS": "1",
           **dict(kv.split("=", 1) for kv in args.server_env)}  # fmt: skip
    logs = REPO / "benchmarks/.cache/logs"
    root = http_bench.only_model_root(model, logs)
    name = read_bundle(model).name
    with (servers.convserve(root, name, logdir=logs, env=env, src=args.src.resolve()) as server,
          tempfile.TemporaryDirectory() as tmp):  # fmt: skip
        url = f"{server.url}/predict?model={name}"
        load: dict = {}
        body = PHOTO.read_bytes()
        drive = threading.Thread(target=lambda: load.update(wrk.run_wrk(
            url, body, "image/jpeg", concurrency=args.concurrency,
            duration=args.seconds + 2, warmup=1)))  # fmt: skip
        drive.start()
        raw = Path(tmp) / "spy.txt"
        threading.Event().wait(1.5)  # the warm-up run and the first second of the real one
        pid = server.process.pid
        before = task_cpu(pid)
        subprocess.run([spy, "record", "-p", str(pid), "-d", str(args.seconds),
                        "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--threads"],
                       check=True, capture_output=True)  # fmt: skip
        after = task_cpu(pid)
        drive.join()
        per_second = load["requests_per_s"]
        cpu = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
        doc = summarize(raw, cpu, round(per_second * args.seconds))
    doc |= {"model": name, "concurrency": args.concurrency, "src": str(args.src),
            "p50_ms": load["p50_ms"], "requests_per_s": per_second}  # fmt: skip
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
