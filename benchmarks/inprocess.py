"""The in-process limit: decode + resize + onnxruntime in one process, no HTTP.

This is the yardstick the HTTP numbers are divided by. It uses the service's
own `preprocess` (the same Pillow/numpy work per image) and an onnxruntime
session with the same thread settings as the server, in two shapes:

- `single`: `concurrency` threads, each decoding one image and running batch 1
  (what a request costs with nothing else going on; p50 at concurrency 1 is the
  single-image time the server's latency is compared with), all counting in one
  time window;
- `batched`: a decode pool with the server's decode thread count feeding one
  inference thread with batches of up to `max_batch` images, decoding the next
  batch while the current one runs (what dynamic batching could reach at best).

The limit at a concurrency is the better of the two.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.loadgen import summarize
from service import engine
from service.bundle import PROBABILITIES_OUTPUT, Bundle, read_bundle
from service.preprocess import preprocess

MAX_PIXELS = 40_000_000


@dataclass
class Model:
    bundle: Bundle
    session: ort.InferenceSession
    input_name: str

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess(data, self.bundle.input, self.bundle.preprocessing, max_pixels=MAX_PIXELS)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([PROBABILITIES_OUTPUT], {self.input_name: batch})[0]


def find_bundle(path: Path) -> Path | None:
    """A version dir, a model dir (highest version) or a models dir (last name, highest version)."""
    if (path / "bundle.json").is_file():
        return path
    for pattern in ("*", "*/*"):
        found = [d for d in path.glob(pattern) if (d / "bundle.json").is_file()]
        if found:
            return max(
                found, key=lambda d: (d.parent.name, int(d.name) if d.name.isdigit() else -1)
            )
    return None


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """What the benchmarks ask of the CUDA EP: exactly what the server asks with its defaults."""
    return engine.cuda_provider_options(engine.EngineOptions(cuda_device_id=device_id))


def load_model(
    bundle_dir: Path, *, provider: str = "cpu", intra_op_threads: int = 0, spinning: bool = True
) -> Model:
    """A session like the server's: only the probabilities output is fetched.

    `spinning=False` stops idle intra-op threads from busy-waiting after each run
    (onnxruntime spins by default), which frees CPU for decoding in a busy server.
    """
    bundle_dir = Path(bundle_dir)
    bundle = read_bundle(bundle_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers = [("CUDAExecutionProvider", cuda_provider_options()), "CPUExecutionProvider"]
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), options, providers=providers)
    if provider == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"asked for CUDA, session got {session.get_providers()}")
    return Model(bundle, session, session.get_inputs()[0].name)


def _timed_loop(
    duration: float, warmup: float, step: Callable[[], int], *, begun: float | None = None
) -> tuple[list[float], int]:
    """Call `step` (returns images done) until time is up; steps ending in the window count.

    Threads measuring together pass one `begun` so that they share one window: each
    timing its own from when it happened to start (64 threads on 2 busy cores start
    seconds apart) summed images over windows that barely overlapped, and inflated
    the 64-in-flight limit by half.
    """
    start = (time.perf_counter() if begun is None else begun) + warmup
    stop = start + duration
    latencies: list[float] = []
    images = 0
    while (t0 := time.perf_counter()) < stop:
        n = step()
        t1 = time.perf_counter()
        if start <= t1 <= stop:  # completed inside the window, as the HTTP client counts
            latencies.append((t1 - t0) * 1000.0)
            images += n
    return latencies, images


def measure_single(
    model: Model, data: bytes, *, concurrency: int, duration: float, warmup: float
) -> dict:
    """`concurrency` threads, each decode + batch-1 inference, back to back."""
    results: list[tuple[list[float], int]] = [([], 0)] * concurrency
    begun: list[float] = []
    all_started = threading.Barrier(concurrency, action=lambda: begun.append(time.perf_counter()))

    def step() -> int:
        model.run(model.preprocess(data)[None])
        return 1

    def worker(i: int) -> None:
        all_started.wait()
        results[i] = _timed_loop(duration, warmup, step, begun=begun[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [x for lat, _ in results for x in lat]
    out = summarize(latencies, duration, 1)
    out["images_per_s"] = round(sum(n for _, n in results) / duration, 2)
    return out | {"mode": "single", "concurrency": concurrency}


def measure_batched(
    model: Model, data: bytes, *, batch: int, decode_threads: int, duration: float, warmup: float
) -> dict:
    """A decode pool feeding batches of `batch`; the next batch decodes while this one runs."""
    with ThreadPoolExecutor(decode_threads) as pool:

        def submit() -> list:
            return [pool.submit(model.preprocess, data) for _ in range(batch)]

        pending = [submit()]

        def step() -> int:
            arrays = [f.result() for f in pending.pop()]
            pending.append(submit())
            model.run(np.stack(arrays))
            return batch

        latencies, images = _timed_loop(duration, warmup, step)
        for f in pending.pop():
            f.result()
    out = summarize(latencies, duration, batch)
    out["images_per_s"] = round(images / duration, 2)
    return out | {"mode": "batched", "batch": batch, "decode_threads": decode_threads}


def measure_limit(
    model: Model,
    data: bytes,
    *,
    inflight: int,
    max_batch: int,
    decode_threads: int = 0,
    duration: float = 3.0,
    warmup: float = 0.5,
    cache: dict | None = None,
) -> dict:
    """The in-process limit with `inflight` images outstanding: the best of single and batched.

    Single is tried with one thread per image in flight (up to 64) and with one per
    CPU: a server holding 32 requests may run two at a time, and on a compute-bound
    model two single-threaded runs beat 32 that fight for two cores by a tenth or more.
    `cache` (shared across calls) measures each distinct configuration once: beyond 64
    in flight and beyond `max_batch` nothing changes, and re-measuring would only add noise.
    """
    cache = {} if cache is None else cache
    cpus = os.cpu_count() or 1
    decode_threads = decode_threads or cpus
    batch = min(inflight, max_batch)
    singles = []
    for threads in dict.fromkeys([min(inflight, 64), min(inflight, cpus)]):
        if ("single", threads) not in cache:
            cache["single", threads] = measure_single(
                model, data, concurrency=threads, duration=duration, warmup=warmup
            )
        singles.append(cache["single", threads])
    single = max(singles, key=lambda r: r["images_per_s"])
    out = {"images_per_s": single["images_per_s"], "p50_ms": single["p50_ms"], "single": single}
    if inflight == 1:
        return out
    if ("batched", batch) not in cache:
        cache["batched", batch] = measure_batched(
            model, data, batch=batch, decode_threads=decode_threads, duration=duration,
            warmup=warmup,
        )  # fmt: skip
    batched = cache["batched", batch]
    out["batched"] = batched
    out["images_per_s"] = max(single["images_per_s"], batched["images_per_s"])
    return out
