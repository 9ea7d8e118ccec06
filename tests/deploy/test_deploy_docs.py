"""docs/deployment.md names only files that exist, and the settings it tells
operators to set are real ones."""

from __future__ import annotations

import re

from deploy_support import ROOT

from service.settings import Settings

DOC = ROOT / "docs" / "deployment.md"
TOP = ("docker/", "k8s/", "tests/", "service/", "docs/", ".dockerignore")


def test_every_repository_path_in_the_deployment_doc_exists() -> None:
    text = DOC.read_text()
    # path-like words, in code spans, code blocks and prose alike
    words = set(re.findall(r"[\w./-]+", text))
    paths = {w.rstrip(".,") for w in words if w.startswith(TOP) and "<" not in w}
    # `requirements-{cpu,gpu}.txt`-style shorthand is expanded by hand below
    paths -= {"docker/requirements-"}
    assert len(paths) > 10, paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/deployment.md names paths that do not exist: {missing}"
    for kind in ("cpu", "gpu"):
        assert (ROOT / "docker" / f"requirements-{kind}.txt").exists()


def test_settings_named_in_the_deployment_doc_are_real() -> None:
    named = set(re.findall(r"CONVSERVE_[A-Z_]+[A-Z]", DOC.read_text()))
    fields = {f"CONVSERVE_{name.upper()}" for name in Settings.model_fields}
    assert named and named <= fields, sorted(named - fields)
