"""The execution shape in use: explicit settings, the tuner's sessions, solo vs busy.

Glue between the settings, service/autotune.py (which only measures) and the
engine: which knobs the user set, and the session object the engine runs,
possibly a pair that gives a lone request every core.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from service import peer_workers
from service.autotune import Choice, Fixed, MakeSession, Tuner
from service.decoder import usable_cpus

log = logging.getLogger("convserve.autotune")

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def cpu_quota(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> int | None:
    """The CPUs a container's CPU limit allows (cgroup v2 `cpu.max`, or v1 CFS quota),
    rounded up; None without a limit. A pod limited to 2 CPUs on a 64-core node sees
    64 CPUs in its affinity mask: tuning for 64 would oversubscribe it badly."""
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def cpu_share(workers: int = 1) -> int:
    """This worker's CPUs: the usable ones (affinity, container limit) over `workers`."""
    cpus = usable_cpus()
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus // max(1, workers))


TUNED_SETTINGS = ("inference_threads", "intra_op_threads", "intra_op_spinning", "max_batch_size")


def fixed_from(settings: Any) -> Fixed:
    """The knobs set explicitly (environment or flags); the rest are tuned.

    pydantic records which fields were given (`model_fields_set`), so a setting
    that merely holds its default is tuned and one set to the same value is kept.
    """
    given = settings.model_fields_set
    return Fixed(**{k: getattr(settings, k) if k in given else None for k in TUNED_SETTINGS})


class SoloOrBusy:
    """Two sessions of one model: `solo` when no other run of it is in flight (and no other
    worker of the server is busy: service/peer_workers.py), else `busy`.

    A lone request gets every core (say 2 intra-op threads); when batches overlap,
    each runs on one thread of its own, which on small machines serves more images.
    Anything but `run` is the busy session's (inputs, outputs, options).
    """

    def __init__(self, busy: Any, solo: Any, *, solo_when_idle: bool = True) -> None:
        self.busy, self.solo = busy, solo
        self.solo_when_idle = solo_when_idle  # False: only `run_alone` takes the solo session
        self._lock = threading.Lock()
        self._active = 0

    def run(self, outputs: Any, feeds: Any, *args: Any) -> Any:
        return self._run(self.solo_when_idle, outputs, feeds, *args)

    def run_alone(self, outputs: Any, feeds: Any, *args: Any) -> Any:
        """A request the data plane serves alone (nothing else of the model in flight)."""
        return self._run(True, outputs, feeds, *args)

    def solo_free(self) -> bool:
        """A `run_alone` now would get the solo session: nothing of this model runs here
        and no other worker is busy."""
        return self._active == 0 and peer_workers.others_idle()

    def _run(self, solo_if_idle: bool, outputs: Any, feeds: Any, *args: Any) -> Any:
        with self._lock:
            self._active += 1
            solo = solo_if_idle and self._active == 1 and peer_workers.others_idle()
            session = self.solo if solo else self.busy
        try:
            return session.run(outputs, feeds, *args)
        finally:
            with self._lock:
                self._active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.busy, name)


def tune_session(
    make_session: MakeSession,
    probe: Any,
    fixed: Fixed,
    *,
    cpus: int,
    batch_cap: int,
    output: str,
    label: str,
    solo_cpus: int = 0,
) -> tuple[Any, Choice]:
    """Tune one model: the session (or SoloOrBusy pair) to run it with, and the choice.

    `probe` is any session of the model (for its input's name and shape).
    """
    inp = probe.get_inputs()[0]
    row = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape[1:])
    tuner = Tuner(make_session, inp.name, row, output, cpus=cpus, solo_cpus=solo_cpus)
    choice = tuner.tune(fixed, batch_cap)
    s = choice.shape
    session = tuner.session(s.intra_op_threads, s.intra_op_spinning)
    if s.solo_intra_op_threads is not None:
        solo = tuner.session(s.solo_intra_op_threads, s.solo_spinning)
        # beside other workers, a batch too takes every CPU when none of them is busy
        idle = s.inference_threads > 1 or peer_workers.tracking()
        session = SoloOrBusy(session, solo, solo_when_idle=idle)
    log.info(
        "%s: %d caller(s) x %d intra-op thread(s)%s, batches of up to %d%s (%s, %.1f s)",
        label,
        s.inference_threads,
        s.intra_op_threads,
        ", spinning" if s.intra_op_spinning else "",
        s.max_batch_size,
        f"; alone: {s.solo_intra_op_threads} thread(s)" if s.solo_intra_op_threads else "",
        choice.source,
        choice.seconds,
    )
    return session, choice
