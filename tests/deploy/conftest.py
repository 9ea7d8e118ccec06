"""Session fixtures for tests/deploy: checkov is slow to start, so it runs once
per framework per session and the tests read its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the helpers beside this file, whatever pytest's import mode
sys.path.insert(0, str(Path(__file__).parent))
from deploy_support import (
    COMPOSED,
    DOCKERFILES,
    KUSTOMIZATIONS,
    ROOT,
    checkov_path,
    missing_tool,
    render_composed_text,
    render_text,
)


def run_checkov(framework: str, targets: list[str]) -> dict:
    """Run checkov offline on `targets`, *without* its skip list, and return the report.

    The allow-list is applied by the tests, so they can also tell when an
    allow-listed check no longer fires.
    """
    exe = checkov_path()
    if exe is None:
        missing_tool("checkov (its own venv, .venv-checkov)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    cmd = [exe, "--skip-download", "--framework", framework, "--output", "json", "--compact"]
    out = subprocess.run(
        [*cmd, *targets], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert out.returncode in (0, 1), f"checkov crashed ({out.returncode}):\n{out.stderr[-3000:]}"
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    found = [r for r in reports if r.get("check_type") == framework]
    assert found, f"checkov scanned nothing for {framework}: {out.stdout[:500]}"
    assert found[0]["summary"]["parsing_errors"] == 0, found[0]["summary"]
    return found[0]


@pytest.fixture(scope="session")
def checkov_kubernetes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """checkov's kubernetes report over every rendered kustomization."""
    out = tmp_path_factory.mktemp("rendered")
    for name in KUSTOMIZATIONS:
        (out / f"{name}.yaml").write_text(render_text(name))
    for name in COMPOSED:
        (out / f"{name}.yaml").write_text(render_composed_text(name))
    return run_checkov("kubernetes", ["--directory", str(out)])


@pytest.fixture(scope="session")
def checkov_dockerfile() -> dict:
    """checkov's dockerfile report over every Dockerfile in docker/."""
    targets: list[str] = []
    for path in DOCKERFILES.values():
        targets += ["--file", str(path.relative_to(ROOT))]
    return run_checkov("dockerfile", targets)
