"""Give memory back to the OS after a spike (glibc's malloc, Linux).

By default glibc serves a large block from its heap once a block of that size
has been freed (the mmap threshold rises up to 32 MiB), and freed heap memory
rarely goes back: after one large request (a 28 MiB inflated body, a 12 MiB
JSON string) the process kept ~100 MiB it no longer used, per worker, for
good. A fixed threshold keeps every block over 4 MiB in its own mapping,
returned at free(); two arenas instead of eight per core keep the decode
threads from each holding a heap of their own. Measured (a 12 MiB and a 15
MiB base64 JSON body, a 14 MiB JSON of 5 M objects): idle RSS 128 MiB before
them, 130 MiB after. The threshold was 128 KiB at first: every image tensor
and batch then got a fresh mapping (page faults on each request), which cost
25-35 % of the course CNN's images/s at concurrency 32 (benchmarks/ablate.py
--off mallopt, results/ablate-mallopt-course256.json); at 4 MiB the difference
to no tuning at all is within run-to-run noise (-9 % and -12 % in two runs).

Setting the mmap threshold also freezes glibc's trim threshold at 128 KiB, so
in a process whose heap top was free after each image (a fresh worker process)
the heap was shrunk and grown back, page by page, around every decoded image:
270-470 page faults per 640x480 JPEG, preprocessing 2.3 -> 3.7-4.8 ms
(`ru_minflt` counted; tests/service/test_memory_settings.py), and a
two-worker server answered a lone photo in 5.8 ms where one worker took 4.4.
(The one-process server had long-lived objects above the images and took
0.05 faults per request either way.) A trim threshold of twice the mmap
threshold keeps an image's working memory on the heap (0 faults) while
anything larger than 4 MiB is still its own mapping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger("convserve.memory")

_M_ARENA_MAX = -8  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free heap top kept before it is given back
ARENA_MAX = 2


def return_memory_to_the_os() -> bool:
    """Set glibc's malloc up to hand large blocks back at free(); False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends have no mallopt
        return False
    done = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        and mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
    )
    if not done:
        log.warning("could not tune malloc: memory after large requests may not be returned")
    return done


def freeze_startup_objects() -> int:
    """Move everything alive now (modules, the app, loaded models) out of the collector's
    reach; returns how many objects that was.

    Called once the models are warm. Under load (course CNN, concurrency 32) a full
    collection walked those objects every ~5 s and held the event loop for ~28 ms
    each time; frozen, they are never scanned again (they were never garbage).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
