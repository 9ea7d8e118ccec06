"""Multiprocess metric values keep one file per process, with the pid cached.

service/metrics.py caches the pid prometheus_client asked of the kernel on every
update; a forked child must still write its own files, not its parent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.service.serving import ROOT

_PROBE = """
import json, os, sys
from service.metrics import Metrics
m = Metrics()
m.requests.labels("/predict", "POST", "200").inc()
child = os.fork()
if child == 0:
    m.requests.labels("/predict", "POST", "200").inc(2)
    os._exit(0)
os.waitpid(child, 0)
print(json.dumps({"parent": os.getpid(), "child": child,
                  "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_its_own_metric_files(tmp_path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    seen = json.loads(out.stdout)
    assert f"counter_{seen['parent']}.db" in seen["files"], seen
    assert f"counter_{seen['child']}.db" in seen["files"], seen
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    total = registry.get_sample_value(
        "convserve_requests_total", {"route": "/predict", "method": "POST", "status": "200"}
    )
    assert total == 3.0
