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
) -> dict:
    """One wrk run (after an unmeasured warm-up run); wrk counts time in whole seconds."""
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
        raw = wrk(duration)
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    ok = raw["requests"] - raw["errors"]["status"]
    rps = ok / seconds
    return {
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "requests_per_s": round(rps, 2),
        "images_per_s": round(rps * images_per_request, 2),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
        "concurrency": concurrency,
        "images_per_request": images_per_request,
        "client": "wrk",
        "client_threads": threads,
        "errors": errors,
        "wrk_errors": raw["errors"],
    }
