"""Drive a server with `wrk` (when installed) and return the same summary as loadgen.

wrk is optional: `apt-get install -y wrk`. The GPU machine has none, so the
Python load generator stays the default and wrk is a cross-check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "post.lua"


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    body: bytes,
    content_type: str,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    threads: int = 1,
    images_per_request: int = 1,
    settle: Callable[[], object] | None = None,
) -> dict:
    """One wrk run (after an unmeasured warm-up run, then `settle()`); wrk counts time in
    whole seconds."""
    threads = max(1, min(threads, concurrency))
    with tempfile.NamedTemporaryFile(suffix=".body") as tmp:
        tmp.write(body)
        tmp.flush()
        env = dict(os.environ, WRK_BODY=tmp.name, WRK_CONTENT_TYPE=content_type)

        def wrk(seconds: float) -> dict:
            cmd = [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(concurrency),
                "-d",
                f"{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                str(SCRIPT),
                url,
            ]
            out = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True
            )
            line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
            return json.loads(line.removeprefix("WRKJSON "))

        if warmup > 0:
            wrk(warmup)
            if settle is not None:
                settle()  # the warm-up's requests still in flight: not the run's work
        raw = wrk(duration)
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    ok = raw["requests"] - raw["errors"]["status"]
    rps = ok / seconds

    def ms(key: str) -> float | None:  # wrk reports 0 when nothing completed
        return round(raw[key] / 1000, 3) if raw["requests"] else None

    return {
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "requests_per_s": round(rps, 2),
        "images_per_s": round(rps * images_per_request, 2),
        "p50_ms": ms("p50_us"),
        "p90_ms": ms("p90_us"),
        "p99_ms": ms("p99_us"),
        "mean_ms": ms("mean_us"),
        "max_ms": ms("max_us"),
        "concurrency": concurrency,
        "images_per_request": images_per_request,
        "client": "wrk",
        "client_threads": threads,
        "errors": errors,
        "wrk_errors": raw["errors"],
    }
