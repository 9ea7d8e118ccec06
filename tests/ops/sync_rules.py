"""Write k8s/monitoring/prometheusrule.yaml from the plain rules file (one source of rules).

    .venv/bin/python -m tests.ops.sync_rules

tests/ops/test_alert_rules.py fails when the two disagree and names this command.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"
RULES = MONITORING / "convserve-rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"

HEADER = """\
# GENERATED from convserve-rules.yaml by `python -m tests.ops.sync_rules`:
# edit that file, not this one. The same alerts as a PrometheusRule for the
# Prometheus Operator. kube-prometheus-stack only loads PrometheusRules that
# match its `ruleSelector` (by default `release: <helm release name>`): add
# that label here if your Prometheus selects on it.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as `|` blocks, as in the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(groups: list[dict]) -> dict:
    """The PrometheusRule object carrying `groups`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "convserve",
            "namespace": "convserve",
            "labels": {"app.kubernetes.io/name": "convserve"},
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    body = yaml.dump(prometheus_rule(groups), Dumper=_Dumper, sort_keys=False, width=1000)
    return HEADER + body


def main() -> None:
    PROMETHEUS_RULE.write_text(render())
    print(f"wrote {PROMETHEUS_RULE}")


if __name__ == "__main__":
    main()
