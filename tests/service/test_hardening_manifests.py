"""No manifest lets the API key's Secret be optional: a missing Secret would silently
mean a server without a key (the pod must rather not start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"


def _key_refs(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "secretKeyRef" and isinstance(value, dict):
                yield value
            else:
                yield from _key_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _key_refs(item)


def test_the_api_key_secret_is_required_everywhere() -> None:
    refs = [
        (path, ref)
        for path in sorted(K8S.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        for ref in _key_refs(doc)
        if ref.get("name") == "convserve-api-key"
    ]
    assert {path.parent.name for path, _ in refs} >= {"base", "kserve"}
    optional = [str(path) for path, ref in refs if ref.get("optional")]
    assert not optional, f"the API key Secret is optional in {optional}"
