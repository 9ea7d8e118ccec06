"""The serial lane: a slow model's uploads decoded by the thread that runs them.

In a worker with one CPU's share (a worker per CPU, the default), decoding
ahead in the pool cannot overlap the run: both take turns on that one CPU, and
for a slow model (the tuner timed its batch-1 run at SLOW_MODEL_MS or more) the
pool's threads mostly take the CPU and its caches from the run in progress
(heavy224 at concurrency 32: each 13 ms run took 13.4 ms against 12.8 alone,
each decode 2.4 ms against 1.64). So such a model's uploads queue still encoded
(`Batcher.submit_deferred`, one row per image) and the inference thread decodes
each right before it runs it (with the others of its batch, when the tuner
chose batches of more than one), one after another, as a plain one-thread
server does. The queue limit, its 503s, the queue-depth metric, deadlines and
disconnects are the batcher's, as for every other request; an image whose
request's deadline passed or whose client left while it queued is never
decoded.

Several images in one request for an idle model still decode in the pool, on
all its threads at once: with nothing else to run, the other worker's CPU may
be free, and the request is answered sooner.
"""

from __future__ import annotations

from collections.abc import Sequence

from service import tracing
from service.lone_upload import solo_ms
from service.models import ServedModel

SLOW_MODEL_MS = 1.0  # a batch-1 run this long dwarfs a photo's decode (~1-2 ms on one CPU)


def takes(model: ServedModel, blobs: Sequence[bytes], *, one_cpu: bool) -> bool:
    """Whether this request goes down the serial lane (see the module's docstring)."""
    if not one_cpu or not blobs or tracing.enabled:
        return False  # traced: the batched path, whose decode span tells all
    if len(blobs) > 1 and model.batcher.idle():
        return False
    ms = solo_ms(model)
    return ms is not None and ms >= SLOW_MODEL_MS
