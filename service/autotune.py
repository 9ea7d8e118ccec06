"""Choose how onnxruntime runs a model from measurements on this machine, at warm-up.

The best execution shape depends on the model and the CPU: a tiny CNN is
cheapest on one intra-op thread with big batches; a 1-GMAC CNN on 2 cores
serves ~15 % more images with two batches at once on one thread each, yet
answers a lone request fastest with both cores on it. Users should not have
to find that out, so each model version is timed at a few candidate shapes
(knows onnxruntime only):

1. solo: batch-1 latency with intra-op threads = CPUs (spinning off and on)
   and = 1: the shape a request gets when nothing else is running (the best
   of 3 interleaved rounds, as the busy shapes' best of 2: load from other
   processes only ever slows a run, so the best is the machine's own speed);
2. busy: images/s of T callers x I intra-op threads at a mid batch, for
   (1, 1), (1, CPUs) and (CPUs, 1); the simplest shape within 5 % of the best
   wins (fewer threads leave the cores to decoding);
   (skipped for a model whose batch-1 latency is under CHEAP_S: decoding
   dominates, so one caller, one intra-op thread, no spinning, the largest
   batch);
3. batch: CPU time per image at batch 1, 2, 4, ... max for the chosen busy
   shape, plus the batcher's per-batch cost; with one caller the largest size
   within 1 % of the cheapest, with several the smallest within 5 % (so the
   callers share the queue evenly).

With more than one caller the lone-request shape gets its own session
(`solo_intra_op_threads`), used whenever no other batch of the model is
running, so throughput never costs concurrency-1 latency. With one caller,
the busy shape must keep batch-1 latency within 10 % of the best solo shape,
or the solo shape is used. Bounded: at most `budget_s` (5 s) per model
version, each measurement a short window; sizes whose one run would take more
than MAX_RUN_S are not tried. Every explicitly set knob is kept as set.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

log = logging.getLogger("convserve.autotune")

BUDGET_S = 5.0  # per model version, session creation included
WINDOW_S = 0.2  # one measurement (at least MIN_RUNS runs)
MIN_RUNS = 3
MAX_RUN_S = 0.12  # a batch size whose one run takes longer is not tried
PER_BATCH_S = 100e-6  # the batcher's own cost per batch (thread hand-off, loop wake-up)
SIMPLER_WITHIN = 0.05  # a simpler shape wins unless the other is this much better
NOISE_WITHIN = 0.01  # batch sizes closer than this per image are equally cheap
SOLO_SLACK = 0.10  # busy shape may cost this much batch-1 latency with one caller
SPIN_GAIN = 0.10  # spinning only if it cuts batch-1 latency by this much
SOLO_SPIN_GAIN = 0.02  # ... or this much for a solo session of its own (idle under load)
BUSY_ROUNDS = 2  # the busy shapes are timed this many times, interleaved
SOLO_ROUNDS = 3  # and the solo ones this many (shorter windows)
CHEAP_S = 0.5e-3  # batch-1 latency below which decoding any photo costs more than the model


@dataclass(frozen=True)
class Fixed:
    """Knobs set explicitly (None: tune). Explicit settings always win."""

    inference_threads: int | None = None
    intra_op_threads: int | None = None
    intra_op_spinning: bool | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Shape:
    """How a model version runs: callers, threads per call, spinning, batch, solo session."""

    inference_threads: int = 1
    intra_op_threads: int = 1
    intra_op_spinning: bool = False
    max_batch_size: int = 32
    solo_intra_op_threads: int | None = None  # a second session for lone batches
    solo_spinning: bool = False


@dataclass
class Choice:
    """The shape, where each knob came from, and what was measured (for /models/{name})."""

    shape: Shape
    source: str  # "auto", "settings" or "auto+settings"
    cpus: int
    seconds: float = 0.0
    measured: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen": asdict(self.shape),
            "source": self.source,
            "cpus": self.cpus,
            "tuning_s": round(self.seconds, 3),
            "measured": self.measured,
        }


MakeSession = Callable[[int, bool], Any]  # (intra_op_threads, spinning) -> InferenceSession


class Tuner:
    """Times one model's sessions; keeps every session it made for the caller to reuse."""

    def __init__(
        self,
        make_session: MakeSession,
        input_name: str,
        row_shape: tuple[int, ...],
        output: str,
        *,
        cpus: int,
        solo_cpus: int = 0,
        budget_s: float = BUDGET_S,
    ) -> None:
        self._make = make_session
        self._input = input_name
        self._row = row_shape
        self._output = [output]
        self.cpus = max(1, cpus)
        self.solo_cpus = max(self.cpus, solo_cpus)  # a lone request may use every CPU
        self.budget_s = budget_s
        self.sessions: dict[tuple[int, bool], Any] = {}
        self._deadline = 0.0
        self._lat: dict[tuple[int, bool], float] = {}  # solo batch-1 seconds per shape

    def session(self, threads: int, spinning: bool) -> Any:
        key = (threads, spinning if threads > 1 else False)  # nothing spins with one thread
        if key not in self.sessions:
            self.sessions[key] = self._make(*key)
        return self.sessions[key]

    def _left(self) -> float:
        return self._deadline - time.perf_counter()

    # ---- measurements ---------------------------------------------------
    def _feed(self, batch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(batch)
        return {self._input: rng.random((batch, *self._row), dtype=np.float32)}

    def latency(self, threads: int, spinning: bool, window_s: float = WINDOW_S) -> float:
        """Median seconds of one batch-1 run, nothing else running."""
        session, feed = self.session(threads, spinning), self._feed(1)
        session.run(self._output, feed)
        times: list[float] = []
        stop = time.perf_counter() + window_s
        while len(times) < MIN_RUNS or (time.perf_counter() < stop and len(times) < 200):
            t0 = time.perf_counter()
            session.run(self._output, feed)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def throughput(self, callers: int, threads: int, spinning: bool, batch: int) -> dict:
        """`callers` threads running `batch`-row runs on one session for a short window."""
        session, feed = self.session(threads, spinning), self._feed(batch)
        session.run(self._output, feed)
        counts = [0] * callers
        stop = time.perf_counter() + WINDOW_S

        def loop(i: int) -> None:
            while counts[i] < MIN_RUNS * batch or time.perf_counter() < stop:
                session.run(self._output, feed)
                counts[i] += batch

        cpu0, t0 = time.process_time(), time.perf_counter()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        images = sum(counts)
        return {
            "images_per_s": round(images / wall, 1),
            "cpu_ms_per_image": round(cpu / images * 1000, 4),
            "run_ms": round(wall / (images / batch / callers) * 1000, 3),
        }

    # ---- the choice -----------------------------------------------------
    def tune(self, fixed: Fixed, batch_cap: int) -> Choice:
        start = time.perf_counter()
        self._deadline = start + self.budget_s
        given = {k: v for k, v in asdict(fixed).items() if v is not None}
        if len(given) == 4:
            shape = Shape(**given)
            return Choice(shape, "settings", self.cpus)
        measured: dict[str, Any] = {}
        solo_threads, solo_spin, solo_s = self._solo(fixed, measured)
        source = "auto+settings" if given else "auto"
        if solo_s < CHEAP_S and fixed.inference_threads is None:
            # the model is a rounding error next to decoding: one caller, one intra-op
            # thread, no spinning (microseconds gained per call, a core burnt that the
            # decoders need), the largest batch (fewest batcher round trips)
            measured["cheap"] = f"batch-1 latency below {CHEAP_S * 1000:g} ms: busy shape not timed"
            threads = fixed.intra_op_threads or 1
            spin = bool(fixed.intra_op_spinning)
            shape = Shape(1, threads, spin, fixed.max_batch_size or batch_cap)
            return Choice(shape, source, self.cpus, time.perf_counter() - start, measured)
        callers, threads, spin = self._busy(fixed, measured, solo_s)
        batch = fixed.max_batch_size or self._batch(callers, threads, spin, batch_cap, measured)
        shape = Shape(callers, threads, spin, batch)
        spun = self._lat.get((solo_threads, True))
        if fixed.intra_op_spinning is None and spun and spun < solo_s * (1 - SOLO_SPIN_GAIN):
            solo_spin, solo_s = True, spun  # its own session, idle under load: spinning is free
        busy_s = self._lat.get((threads, spin)) or self.latency(threads, spin)
        if (solo_threads, solo_spin) != (threads, spin) and (
            callers > 1 or busy_s > solo_s * (1 + SOLO_SLACK)
        ):  # throughput may not cost concurrency-1 latency: lone batches get their own session
            shape = replace(shape, solo_intra_op_threads=solo_threads, solo_spinning=solo_spin)
        return Choice(shape, source, self.cpus, time.perf_counter() - start, measured)

    def _solo(self, fixed: Fixed, measured: dict) -> tuple[int, bool, float]:
        threads = [fixed.intra_op_threads] if fixed.intra_op_threads else [self.solo_cpus, 1]
        spins = [fixed.intra_op_spinning] if fixed.intra_op_spinning is not None else [False, True]
        lat: dict[tuple[int, bool], float] = {}
        for _ in range(SOLO_ROUNDS):  # interleaved, the best of each: a busy moment on the
            for t in dict.fromkeys(threads):  # machine must not make 2 threads look useless
                for s in dict.fromkeys(spins if t > 1 else [False]):
                    got = self.latency(t, s, WINDOW_S / SOLO_ROUNDS)
                    lat[t, s] = min(got, lat.get((t, s), got))
        measured["solo"] = {_key(*k): round(v * 1000, 4) for k, v in lat.items()}
        self._lat = lat
        best = min(lat, key=lat.get)
        still = (best[0], False)
        if best[1] and still in lat and lat[best] > lat[still] * (1 - SPIN_GAIN):
            best = still  # spinning burns the decoders' CPU: only for a clear gain
        if best[0] > 1 and (1, False) in lat and lat[1, False] <= lat[best] * (1 + SIMPLER_WITHIN):
            best = (1, False)  # one thread is as fast: cheaper
        return best[0], best[1], lat[best]

    def _busy(self, fixed: Fixed, measured: dict, solo_s: float) -> tuple[int, int, bool]:
        c = self.cpus
        shapes = [(1, 1), (1, c), (c, 1)]  # simplest first
        if fixed.inference_threads:
            shapes = [(fixed.inference_threads, t) for t in (1, c)]
        if fixed.intra_op_threads:
            shapes = [(n, fixed.intra_op_threads) for n in {n for n, _ in shapes}]
        shapes = list(dict.fromkeys(shapes))
        spin = fixed.intra_op_spinning if fixed.intra_op_spinning is not None else False
        if len(shapes) == 1:
            return (*shapes[0], spin)
        batch = 8  # or less, so that a run stays well under MAX_RUN_S
        while batch > 1 and batch * solo_s > MAX_RUN_S / 2:
            batch //= 2
        rates: dict[tuple[int, int], float] = {}
        for _ in range(BUSY_ROUNDS):  # interleaved; the best of each: other load only slows
            for n, t in shapes:
                if rates and self._left() < WINDOW_S * 2:
                    break
                got = self.throughput(n, t, spin, batch)
                key = f"{n}x{t} batch {batch}"
                best_yet = measured.setdefault("busy", {}).get(key)
                if best_yet is None or got["images_per_s"] > best_yet["images_per_s"]:
                    measured["busy"][key] = got
                    rates[n, t] = got["images_per_s"]
        best = max(rates.values())
        n, t = next(s for s in rates if rates[s] >= best * (1 - SIMPLER_WITHIN))
        return n, t, spin

    def _batch(self, callers: int, threads: int, spin: bool, cap: int, measured: dict) -> int:
        sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < cap] + [cap]
        cost: dict[int, float] = {}
        run_s = 0.0  # of the last size tried
        for b, previous in zip(sizes, [0, *sizes], strict=False):
            if cost and (self._left() < WINDOW_S * 2 or run_s * b / previous > MAX_RUN_S):
                break  # out of time, or so slow per run that batching has stopped paying
            got = self.throughput(callers, threads, spin, b)
            cost[b] = got["cpu_ms_per_image"] / 1000 + PER_BATCH_S / b
            measured.setdefault("batch", {})[str(b)] = got
            run_s = got["run_ms"] / 1000
        return pick_batch(cost, callers)


def pick_batch(cost: dict[int, float], callers: int) -> int:
    """The batch size from each size's measured seconds per image (batcher cost included).

    One caller: the largest size within NOISE_WITHIN of the cheapest. Bigger batches
    mean fewer round trips, but those are in the cost already; a size that costs
    more per image costs it on every image (heavy224: batch 2 at +2 % per image was
    chosen under a 5 % rule, and served 3 % fewer images/s at c=32 than batch 1).
    Several callers: the smallest size within SIMPLER_WITHIN, so that the callers
    share the queue evenly instead of one taking it all.
    """
    cheapest = min(cost.values())
    if callers == 1:
        return max(b for b in cost if cost[b] <= cheapest * (1 + NOISE_WITHIN))
    return min(b for b in cost if cost[b] <= cheapest * (1 + SIMPLER_WITHIN))


def _key(threads: int, spinning: bool) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}{', spinning' if spinning else ''}"
