"""The alert rules: valid for promtool, unit-tested, the same in both shipped forms,
each with its runbook, and rendered by kustomize as valid objects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops import sync_rules
from tests.ops.ops_support import (
    DASHBOARD,
    MONITORING,
    OPERATIONS_DOC,
    ROOT,
    RULES,
    alert_rules,
    run_promtool,
)

ALERTS = {
    "ConvserveNotReady",
    "ConvserveHighErrorRatio",
    "ConvserveHighLatencyP99",
    "ConvserveQueueNearLimit",
    "ConvserveShedding",
    "ConvserveNotOnCUDA",
    "ConvserveModelLoadFailures",
}


def test_rules_file_passes_promtool_check() -> None:
    out = run_promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_check_rejects_a_broken_rule(tmp_path: Path) -> None:
    """Guard against a check that accepts anything."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.read_text().replace("convserve_ready == 0", "convserve_ready == ("))
    out = run_promtool("check", "rules", str(broken))
    assert out.returncode != 0


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    out = run_promtool("test", "rules", str(Path(__file__).with_name("rules_test.yaml")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_unit_tests_cover_every_alert() -> None:
    tests = yaml.safe_load(Path(__file__).with_name("rules_test.yaml").read_text())["tests"]
    cases = [case for t in tests for case in t["alert_rule_test"]]
    tested = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert {rule["alert"] for rule in alert_rules()} == ALERTS == tested


def test_prometheusrule_carries_the_same_rules_and_passes_promtool(tmp_path: Path) -> None:
    shipped = (MONITORING / "prometheusrule.yaml").read_text()
    assert shipped == sync_rules.render(), "run `.venv/bin/python -m tests.ops.sync_rules`"
    doc = yaml.safe_load(shipped)
    assert doc["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    spec = tmp_path / "from-prometheusrule.yaml"
    spec.write_text(yaml.safe_dump(doc["spec"]))
    out = run_promtool("check", "rules", str(spec))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_runbook_paragraph() -> None:
    doc = OPERATIONS_DOC.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert (ROOT / path) == OPERATIONS_DOC and anchor in anchors, url
        section = doc.split(f"### {rule['alert']}", 1)[1].split("\n#", 1)[0]
        for part in ("**Means**", "**Look at**", "**Do**"):
            assert part in section, f"{rule['alert']}: runbook lacks {part}"


def _render_with_monitoring(tmp_path: Path) -> list[dict]:
    """The gpu overlay with the ServiceMonitor and monitoring components, as a user composes it."""
    sys.path.insert(0, str(ROOT / "tests" / "deploy"))
    from deploy_support import K8S, kubectl

    parts = [K8S / "components" / "servicemonitor", MONITORING]
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines += [f"  - {os.path.relpath(K8S / 'overlays' / 'gpu', tmp_path)}", "components:"]
    lines += [f"  - {os.path.relpath(part, tmp_path)}" for part in parts]
    (tmp_path / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_monitoring_component_renders_rule_and_dashboard(tmp_path: Path) -> None:
    docs = _render_with_monitoring(tmp_path)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "convserve"
    assert rule["spec"] == yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    (board,) = [d for d in docs if d["metadata"]["name"] == "convserve-grafana-dashboard"]
    assert board["metadata"]["namespace"] == "convserve"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["convserve.json"]) == json.loads(DASHBOARD.read_text())
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate (dev extra) is not installed")
    kubernetes_validate.validate(board, kubernetes_validate.latest_version(), strict=True)
