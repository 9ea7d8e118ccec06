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
    MODEL_VOLUME_KUSTOMIZATIONS,
    ROOT,
    DockerIgnore,
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
    for name in [*KUSTOMIZATIONS, *MODEL_VOLUME_KUSTOMIZATIONS]:
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


@pytest.fixture(scope="session")
def server_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The convserve wheel, built as the Dockerfiles' `pip install .` builds it, from
    exactly the files `docker build` would send (.dockerignore applied)."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip("setuptools is not in this venv: cannot build the wheel offline")
    where = tmp_path_factory.mktemp("wheel")
    context = where / "context"
    for rel in DockerIgnore.read(ROOT / ".dockerignore").context(ROOT):
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / rel).read_bytes())
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    out = subprocess.run(
        [*cmd, "--wheel-dir", str(where / "dist"), str(context)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (where / "dist").glob("convserve-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_server(server_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That wheel installed on its own (`--no-deps`, as in the image) into a bare
    directory: `bin/convserve` is the image's entry point, the directory goes on
    PYTHONPATH, and the dependencies come from this venv."""
    site = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    out = subprocess.run(
        [*cmd, "--target", str(site), str(server_wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return site
