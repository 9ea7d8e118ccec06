"""service/memory.py's malloc settings must not make every decoded image page-fault.

Fixing the mmap threshold also froze glibc's trim threshold at 128 KiB: in a
fresh process (as every worker is) the heap was shrunk and grown back around
every image, 270-470 minor page faults per 640x480 JPEG and 60-100 % slower
preprocessing. Counted in a fresh process (the settings apply to a whole
process), with the kernel's own counter: no timing involved.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.service.serving import ROOT

FAULTS_PER_IMAGE_LIMIT = 50  # wide: the defect took 270-470 per image, the fix ~0

_PROBE = """
import json, resource, sys
from pathlib import Path
from service.memory import return_memory_to_the_os
from service.bundle import read_bundle
from service.preprocess import preprocess

tuned = return_memory_to_the_os()
bundle = read_bundle(Path(sys.argv[1]))
photo = Path(sys.argv[2]).read_bytes()
def once():
    preprocess(photo, bundle.input, bundle.preprocessing, max_pixels=10**8)
for _ in range(20):
    once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    once()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": tuned, "faults_per_image": (after - before) / 100}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, Linux only")
def test_preprocessing_a_photo_takes_no_page_faults_under_the_malloc_settings() -> None:
    bundle = ROOT / "models" / "digits" / "1"
    photo = ROOT / "benchmarks" / "data" / "photo-640x480.jpg"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bundle), str(photo)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    probe = json.loads(out.stdout)
    assert probe["tuned"], "mallopt was not applied: the test measures nothing"
    assert probe["faults_per_image"] < FAULTS_PER_IMAGE_LIMIT, probe


_FREEZE_PROBE = """
import gc, json
import service.app  # what a server has imported before its models are warm
from service.memory import freeze_startup_objects
tracked = len(gc.get_objects())
frozen = freeze_startup_objects()
print(json.dumps({"tracked": tracked, "frozen": frozen, "left": len(gc.get_objects())}))
"""


def test_start_up_objects_are_out_of_the_collectors_reach() -> None:
    """A full collection walked every module and model object under load (~28 ms on the
    event loop each time); frozen, the collector sees almost nothing of start-up."""
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    counts = json.loads(out.stdout)
    assert counts["tracked"] > 50_000, counts  # FastAPI, pydantic, numpy, onnxruntime...
    assert counts["frozen"] >= counts["tracked"] * 0.9, counts
    assert counts["left"] < 1_000, counts
