"""checkov's Kubernetes and Dockerfile policies: nothing fails outside the
commented allow-list in tests/deploy/checkov.yaml, and nothing on that list
is stale (every allow-listed check still fires somewhere)."""

from __future__ import annotations

import pytest
from deploy_support import allow_list

PREFIXES = {"kubernetes": ("CKV_K8S_", "CKV2_K8S_"), "dockerfile": ("CKV_DOCKER_", "CKV2_DOCKER_")}


def _findings(report: dict) -> dict[str, list[str]]:
    failed: dict[str, list[str]] = {}
    for check in report["results"]["failed_checks"]:
        where = f"{check['file_path']}:{check['resource']}"
        failed.setdefault(check["check_id"], []).append(where)
    return failed


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_reports_nothing_outside_the_allow_list(
    framework: str, request: pytest.FixtureRequest
) -> None:
    report = request.getfixturevalue(f"checkov_{framework}")
    assert report["summary"]["passed"] > 20, "checkov ran suspiciously few checks"
    unexpected = {k: v for k, v in _findings(report).items() if k not in allow_list()}
    assert not unexpected, f"checkov {framework} findings outside the allow-list: {unexpected}"


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_every_allow_listed_check_still_fires(
    framework: str, request: pytest.FixtureRequest
) -> None:
    report = request.getfixturevalue(f"checkov_{framework}")
    mine = {c for c in allow_list() if c.startswith(PREFIXES[framework])}
    stale = mine - set(_findings(report))
    assert not stale, f"allow-listed but no longer failing, remove from checkov.yaml: {stale}"
