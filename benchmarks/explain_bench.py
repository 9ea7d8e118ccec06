"""How long POST /explain takes: the 32x32 digits model and the 224x224 heavy CNN.

Each model is served by `python -m service` on 127.0.0.1; requests are sent
one at a time (the latency a person waiting for the heat map sees), after two
warm-up requests. Next to it, the floor: onnxruntime alone running the same
rows (the image and its occluded copies) in batches of max_batch_size, and one
/predict request. Only CPU here; the heavy bundle comes from
`python -m benchmarks.heavy_model` (skipped with a note when it is not built).

    .venv/bin/python -m benchmarks.explain_bench --out benchmarks/results/explain.json
    .venv/bin/python -m benchmarks.explain_bench --quick      # digits only, a few requests
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks import report, servers
from benchmarks.heavy_model import MODELS as HEAVY_MODELS

REPO = Path(__file__).resolve().parent.parent
LOGS = REPO / "benchmarks" / ".cache" / "logs"
MAX_BATCH = 32  # convserve's default max_batch_size


@dataclass(frozen=True)
class Case:
    name: str
    bundle: Path
    image: Path
    queries: tuple[str, ...]  # extra /explain query strings; "" = the defaults


CASES = {
    "digits": Case(
        "digits",
        REPO / "models" / "digits" / "1",
        REPO / "tests" / "data" / "seven.png",
        ("", "&window=4&stride=2"),
    ),
    "heavy": Case(
        "heavy",
        HEAVY_MODELS / "heavy" / "1",
        REPO / "benchmarks" / "data" / "photo-640x480.jpg",
        ("", "&window=28&stride=28"),
    ),
}


def timed(client: httpx.Client, path: str, data: bytes, requests: int) -> tuple[list[float], dict]:
    """Seconds per request (after two warm-ups) and the last answer's JSON (if any)."""
    headers = {"Content-Type": "application/octet-stream"}
    last = None
    for _ in range(2):
        last = client.post(path, content=data, headers=headers)
        last.raise_for_status()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        last = client.post(path, content=data, headers=headers)
        times.append(time.perf_counter() - start)
        last.raise_for_status()
    is_json = last.headers["content-type"].startswith("application/json")
    return times, last.json() if is_json else {}


def onnxruntime_floor(bundle: Path, data: bytes, rows: int, repeats: int = 3) -> float:
    """Seconds for onnxruntime alone to run `rows` copies of the image in batches of 32."""
    import onnxruntime as ort

    from service.bundle import read_bundle
    from service.preprocess import preprocess

    meta = read_bundle(bundle)
    x = preprocess(data, meta.input, meta.preprocessing, max_pixels=10**8)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    batches = [np.repeat(x[None], min(MAX_BATCH, rows - s), 0) for s in range(0, rows, MAX_BATCH)]
    session.run(["probabilities"], {"image": batches[0]})  # warm
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            session.run(["probabilities"], {"image": batch})
        best = min(best, time.perf_counter() - start)
    return best


def summary(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {
        "p50_ms": statistics.median(ms),
        "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
        "min_ms": ms[0],
        "requests": len(ms),
    }


def run_case(case: Case, requests: int) -> list[dict]:
    data = case.image.read_bytes()
    rows = []
    with (
        servers.convserve(case.bundle.parent.parent, case.bundle.parent.name, logdir=LOGS) as srv,
        httpx.Client(base_url=srv.url, timeout=600) as client,
    ):
        predict, _ = timed(client, "/predict", data, requests)
        for query in case.queries:
            json_times, doc = timed(client, f"/explain?format=json{query}", data, requests)
            png_times, _ = timed(client, f"/explain?format=png{query}", data, requests)
            floor = onnxruntime_floor(case.bundle, data, doc["variants"] + 1)
            rows.append(
                {
                    "model": case.name,
                    "window": doc["window"],
                    "stride": doc["stride"],
                    "copies": doc["variants"],
                    "json": summary(json_times),
                    "png": summary(png_times),
                    "predict_p50_ms": summary(predict)["p50_ms"],
                    "onnxruntime_alone_ms": floor * 1000,
                }
            )
            report.log(f"{case.name} {query or 'defaults'}: {rows[-1]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,heavy", help="digits,heavy")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per point")
    parser.add_argument("--quick", action="store_true", help="digits only, 3 requests")
    parser.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    names = ["digits"] if args.quick else args.models.split(",")
    requests = 3 if args.quick else args.requests
    rows = []
    for name in names:
        case = CASES[name]
        if not (case.bundle / "model.onnx").is_file():
            report.log(f"{name}: {case.bundle} is not built (python -m benchmarks.heavy_model)")
            continue
        rows += run_case(case, requests if name == "digits" else max(3, requests // 4))
    table = report.table(
        [
            "model",
            "window/stride",
            "copies",
            "JSON p50 ms",
            "PNG p50 ms",
            "onnxruntime alone ms",
            "/predict p50 ms",
        ],
        [
            [
                r["model"],
                f"{r['window']}/{r['stride']}",
                r["copies"],
                r["json"]["p50_ms"],
                r["png"]["p50_ms"],
                r["onnxruntime_alone_ms"],
                r["predict_p50_ms"],
            ]
            for r in rows
        ],
    )
    print(table)
    report.write_json(args.out, {"machine": report.machine(), "results": rows, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
