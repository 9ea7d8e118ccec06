"""Shared helpers for tests/ops: promtool, the metric names the rules and dashboard use."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
RULES = MONITORING / "convserve-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
# series that come from elsewhere (kube-state-metrics), not from convserve's /metrics
EXTERNAL = {"kube_pod_container_resource_requests"}
_METRIC = re.compile(r"\b(?:convserve|process|kube)_[a-z0-9_]+\b")


def promtool() -> str:
    """promtool's path; without it a skip that says why, or a failure under CI."""
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool is not installed (Debian/Ubuntu: `apt-get install prometheus`; "
            ".ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and template queries."""
    doc = json.loads(DASHBOARD.read_text())
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in doc["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield query["query"]


def metric_names(expr: str) -> set[str]:
    """The convserve_*, process_* and kube_* series names an expression reads."""
    return set(_METRIC.findall(expr))


def scraped_names(text: str) -> set[str]:
    """Every sample name (with _total, _bucket, ...) of an exposition: a family declared
    without a single sample does not count."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
