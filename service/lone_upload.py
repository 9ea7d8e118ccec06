"""The lone-upload path: one upload with nothing else of its model in flight.

A plain server decodes and runs such a request in one step; the batched path
would add a queue and a hand-off to the inference thread, which at concurrency
1 only cost wake-ups. So the upload is decoded and run in ONE decode-pool job
(one thread hop), and when it is the only request in the process and the
model is fast, an image within ALONE_MAX_* is decoded and run right on the
event loop (no hop at all). A worker with one CPU's share (one worker per
CPU, the default) serves every such upload on its loop, alone or not: its pool
threads would only compete with the loop for that CPU, and each hop cost CPU
(course CNN, 2 workers on 2 cores, concurrency 32: 2.59 -> 2.45 ms of CPU per
request, 727 -> 782 images/s). A slow model's lone upload also runs on the loop
when its run would have every CPU anyway (the tuner's solo session, no other
worker busy): the two hops cost more than the loop could do meanwhile (heavy224,
c=1: p50 11.68 -> 11.07 ms). The request waits for the pool job only until its
deadline; the model never starts after that (service/lone_claim.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from service import batcher as scheduler
from service import tracing
from service.bundle import PROBABILITIES_OUTPUT
from service.decoder import INLINE_MAX_BYTES, Decoder
from service.errors import APIError, InferenceFailed, Timeout
from service.lone_claim import LoneClaim
from service.models import ServedModel

# Alone in the process, a request for a model the tuner timed under ALONE_MODEL_MS
# with an image under these caps runs entirely on the event loop: no thread hop at all.
ALONE_MODEL_MS = 1.0
ALONE_MAX_BYTES = 1 << 20
ALONE_MAX_PIXELS = 1 << 20


def solo_ms(model: ServedModel) -> float | None:
    """The tuner's fastest batch-1 run of this model (ms); None when it did not time one."""
    solo = ((model.engine.execution or {}).get("measured") or {}).get("solo") or {}
    return min(solo.values()) if solo else None


def fast_alone(model: ServedModel) -> bool:
    """The tuner timed this model's batch-1 run under ALONE_MODEL_MS (so blocking the
    event loop for it costs nothing a hop would not)."""
    ms = solo_ms(model)
    return ms is not None and ms < ALONE_MODEL_MS


async def run_alone(
    decoder: Decoder,
    model: ServedModel,
    blobs: Sequence[bytes],
    outputs: Sequence[str],
    deadline: float,
    *,
    in_flight: int,
    one_cpu: bool,
    loop_decode: bool,
    timeout_s: float,
) -> dict[str, np.ndarray] | None:
    """The outputs of a lone upload, or None when this path does not apply (the caller
    takes the batched path). `one_cpu`: this process has one CPU's share (a worker per
    CPU, the default), so a fast model's uploads are served on the event loop whatever
    else is in flight. `loop_decode` False (inline_decode_max_pixels=0): the user wants
    every image decoded in the pool."""
    batcher = model.batcher
    if len(blobs) != 1 or not batcher.idle() or tracing.enabled:
        return None  # traced: the batched path, whose decode/queue/batch spans tell all
    on_loop = loop_decode and (
        ((in_flight <= 1 or one_cpu) and fast_alone(model))
        or (in_flight <= 1 and model.engine.owns_the_machine())
    )
    if len(blobs[0]) <= INLINE_MAX_BYTES and not on_loop:
        return None  # tiny uploads decode inline, on the loop: the batched path is cheaper
    if any(n != PROBABILITIES_OUTPUT and n not in model.layers for n in outputs):
        return None  # the batched path says which output is unknown
    if deadline <= time.monotonic():
        return None  # the batched path answers Timeout without decoding
    batch = None
    if on_loop:  # a hop would only add wake-ups (alone) or compete for the one CPU
        caps = {"max_bytes": ALONE_MAX_BYTES, "max_pixels": ALONE_MAX_PIXELS}
        batch = decoder.inline(model.bundle, blobs, **caps)  # only cheap images
    claim = LoneClaim(batcher, lambda x: model.engine.run_alone(x, list(outputs)), deadline)
    try:
        if batch is not None:
            return claim.run(batch)
        return await decoder.decode_then(model.bundle, blobs[0], claim.run, deadline=deadline)
    except APIError:
        raise
    except scheduler.DeadlineExceeded as exc:
        raise Timeout(f"{exc} (request timeout {timeout_s:g} s)") from None
    except Exception as exc:  # as the batched path reports a failed batch
        raise InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}") from None
    finally:
        claim.end()  # also when cancelled (the client went away)
