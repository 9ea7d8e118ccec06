"""Where one raw `/predict` spends its time inside convserve's ASGI app, stage by stage.

No network and no uvicorn: the app is called directly, the way uvicorn calls it
(the photo arrives in two body messages of 64 KiB and the rest, as from a
socket), one request at a time on the event loop. Timestamps are taken at the
app's entry, at its first `receive`, around the decode (`preprocess` as the
decoder calls it) and the model run (`Engine.run_alone`), and at each `send`;
the table has the median of each stage over all requests. The decode and the
run are what the in-process limit times as well; every other stage is what
convserve's request path costs on top (middleware, request parsing, admission,
the answer, metrics, the access log), with its caches cold from the decode.

    python -m benchmarks.request_stages --model benchmarks/.cache/models/course256/1
    python -m benchmarks.request_stages --requests 3000 --log-level warning

Lone uploads only (concurrency 1): the decode must run on the event loop, which
it does for a fast model with the default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvloop

from benchmarks import http_bench, report
from benchmarks.photo import PHOTO
from service import decoder
from service.app import create_app
from service.bundle import read_bundle
from service.engine import Engine
from service.server_state import Phase, ServerState
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CHUNK = 65536  # what uvicorn's protocol hands on per read of a large body
STAGES = [
    ("app entry -> first receive", "start", "receive"),
    ("body read, admission -> decode", "receive", "decode0"),
    ("decode (preprocess)", "decode0", "decode1"),
    ("decode -> run", "decode1", "run0"),
    ("model run", "run0", "run1"),
    ("run -> answer starts", "run1", "http.response.start"),
    ("answer sent -> app returns", "http.response.body", "end"),
]
_marks: dict[str, float] = {}


def _timed(fn: Callable, before: str, after: str) -> Callable:
    def wrapper(*args: object, **kwargs: object) -> object:
        _marks[before] = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _marks[after] = time.perf_counter()

    return wrapper


@contextmanager
def instrumented() -> Iterator[None]:
    """Time the decode and the model run where the request path calls them, and put
    both back afterwards (a caller in the same process, a test, gets them unwrapped)."""
    preprocess, run_alone = decoder.preprocess, Engine.run_alone
    decoder.preprocess = _timed(preprocess, "decode0", "decode1")
    Engine.run_alone = _timed(run_alone, "run0", "run1")
    try:
        yield
    finally:
        decoder.preprocess, Engine.run_alone = preprocess, run_alone


def _scope(body: bytes) -> dict:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"image/jpeg"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict",
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip


async def one_request(app: Callable, body: bytes) -> int:
    """One POST through the app; its status. Marks `start`, `receive`, each send, `end`."""
    messages = [
        {"type": "http.request", "body": body[i : i + CHUNK], "more_body": i + CHUNK < len(body)}
        for i in range(0, len(body), CHUNK)
    ]
    status = []

    async def receive() -> dict:
        if messages:
            _marks.setdefault("receive", time.perf_counter())
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays: no http.disconnect
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        _marks[message["type"]] = time.perf_counter()
        if message["type"] == "http.response.start":
            status.append(message["status"])

    _marks.clear()
    _marks["start"] = time.perf_counter()
    await app(_scope(body), receive, send)
    _marks["end"] = time.perf_counter()
    return status[0]


async def _ready(state: ServerState, timeout_s: float = 120.0) -> None:
    """Until warm-up is done (the app answers 503 before), or RuntimeError."""
    give_up = time.monotonic() + timeout_s
    while not state.ready:
        if state.phase is Phase.FAILED or time.monotonic() > give_up:
            raise RuntimeError(f"convserve did not become ready: {state.phase}")
        await asyncio.sleep(0.05)


async def measure(model: Path, requests: int, log_level: str) -> dict:
    name = read_bundle(model, verify_hash=False).name
    with tempfile.TemporaryDirectory() as scratch:
        root = http_bench.only_model_root(model, Path(scratch))
        settings = Settings(model_dir=root, default_model=name, grpc_port=0, log_level=log_level)
        app = create_app(settings)
        startup: asyncio.Queue = asyncio.Queue()
        await startup.put({"type": "lifespan.startup"})
        answers: asyncio.Queue = asyncio.Queue()
        lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        task = asyncio.create_task(app(lifespan, startup.get, answers.put))
        if (await answers.get())["type"] != "lifespan.startup.complete":
            raise RuntimeError("convserve did not start")
        try:
            await _ready(app.state.dataplane.state)
            body = PHOTO.read_bytes()
            rows = []
            for i in range(requests + requests // 10):  # the first tenth warms up
                if await one_request(app, body) != 200:
                    raise RuntimeError("convserve did not answer 200")
                if i >= requests // 10:
                    rows.append(dict(_marks))
        finally:
            await startup.put({"type": "lifespan.shutdown"})
            await task
    stages = {label: statistics.median(r[b] - r[a] for r in rows) * 1e6 for label, a, b in STAGES}
    total = statistics.median(r["end"] - r["start"] for r in rows) * 1e6
    return {"model": name, "requests": len(rows), "log_level": log_level,
            "stages_us": stages, "total_us": total}  # fmt: skip


def table(result: dict) -> str:
    own = result["stages_us"]["decode (preprocess)"] + result["stages_us"]["model run"]
    rows = [[label, round(us, 1)] for label, us in result["stages_us"].items()]
    rows.append(["whole request (median)", round(result["total_us"], 1)])
    rows.append(["of which not decode or run", round(result["total_us"] - own, 1)])
    return report.table(["stage", "µs (median)"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "models/digits/1")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--out", type=Path, help="JSON with the stages")
    args = p.parse_args(argv)
    with instrumented():
        result = uvloop.run(measure(args.model, args.requests, args.log_level))
    result["machine"] = report.machine()
    report.write_json(args.out, result)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
