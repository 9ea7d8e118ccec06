"""A copy of the service with one optimisation switched off, to measure what it moved.

`git archive` of a commit (default HEAD) into DIR, then one line changed per
switched-off change, so `http_bench --targets convserve,baseline --baseline-src DIR`
compares the two in one run. The tuner needs no copy: run the baseline with its
knobs set explicitly (`--baseline-src . --baseline-env CONVSERVE_INTRA_OP_THREADS=0
...`), which keeps them as set.

    python -m benchmarks.ablate /tmp/no-alone --off alone      # no lone-upload path at all
    python -m benchmarks.ablate /tmp/no-loop --off on-loop     # lone uploads hop to the pool
    python -m benchmarks.ablate /tmp/no-one-cpu --off one-cpu  # on the loop only when alone
    python -m benchmarks.ablate /tmp/no-solo-loop --off solo-loop  # slow models' lone uploads hop
    python -m benchmarks.ablate /tmp/no-balance --off balanced-accept  # uvicorn's own accept
    python -m benchmarks.ablate /tmp/no-multipart --off multipart
    python -m benchmarks.ablate /tmp/no-yield --off yield-to-inference  # loop preempts runs
    python -m benchmarks.ablate /tmp/no-serial --off serial-lane  # slow models decode in the pool
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# change -> (file, the line that turns it on, the line that leaves it off)
SWITCHES = {
    "alone": ("service/lone_upload.py",
              "    batcher = model.batcher\n", "    return None\n"),
    "on-loop": ("service/lone_upload.py",
                "    on_loop = loop_decode and (", "    on_loop = False and ("),
    "one-cpu": ("service/lone_upload.py",  # a one-CPU worker's uploads on its loop under load
                "(in_flight <= 1 or one_cpu)", "(in_flight <= 1)"),
    "solo-loop": ("service/lone_upload.py",  # a slow model's lone upload on the loop
                  "        or (in_flight <= 1 and model.engine.owns_the_machine())",
                  "        or False"),
    "balanced-accept": ("service/connection.py",  # workers take turns accepting
                        '        options["loop"] = "service.balanced_accept:new_event_loop"',
                        "        pass"),
    "mallopt": ("service/__main__.py",  # service/memory.py: 4 MiB mmap threshold, 2 arenas
                "    return_memory_to_the_os()\n    if settings.workers == 1:",
                "    if settings.workers == 1:"),
    "yield-to-inference": ("service/dataplane.py",  # service/thread_policy.py
                           "        thread_policy.side()", "        pass"),
    "serial-lane": ("service/serial_lane.py",  # slow models' uploads decoded in the pool
                    "    if not one_cpu or not blobs", "    if True or not blobs"),
    "multipart": ("service/routes/inputs.py",
                  "fast = _fast_multipart(await request.body(), content_type, max_images)",
                  "fast = None"),
}  # fmt: skip


def make(out: Path, off: list[str], commit: str = "HEAD") -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "service"], cwd=REPO, check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    for name in off:
        path, on, replacement = SWITCHES[name]
        text = (out / path).read_text()
        if text.count(on) != 1:
            raise SystemExit(f"{name}: {path} at {commit} has no line {on!r}")
        (out / path).write_text(text.replace(on, replacement))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", type=Path)
    p.add_argument("--off", action="append", default=[], choices=sorted(SWITCHES))
    p.add_argument("--commit", default="HEAD")
    args = p.parse_args()
    print(make(args.out, args.off, args.commit))


if __name__ == "__main__":
    main()
