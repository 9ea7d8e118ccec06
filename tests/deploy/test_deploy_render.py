"""The kustomizations render, and every rendered object is valid Kubernetes:
built-in kinds against the API's JSON schemas (kubernetes-validate, strict),
custom resources by their embedded pod spec and their references."""

from __future__ import annotations

import os

import pytest
from deploy_support import (
    K8S,
    KUSTOMIZATIONS,
    OVERLAYS,
    missing_tool,
    one,
    render,
    render_dir,
)

# The oldest Kubernetes the manifests promise to work on, and the newest schema
# kubernetes-validate ships.
K8S_VERSIONS = ("1.28", "latest")
CUSTOM_KINDS = {"ServiceMonitor", "InferenceService"}
# KServe's predictor = PodSpec + these component-extension fields
KSERVE_EXTENSION = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy", "autoScaling",
}  # fmt: skip


def _validate(doc: dict, version: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing_tool("kubernetes-validate (dev extra)")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        message = f"{name} invalid for Kubernetes {version}: {path}: {exc.message}"
        raise AssertionError(message) from None


def _with_servicemonitor(tmp_path, overlay: str) -> list[dict]:
    """An overlay plus the opt-in ServiceMonitor component, as a user would compose them."""
    base = os.path.relpath(K8S / "overlays" / overlay, tmp_path)  # kustomize wants relative
    component = os.path.relpath(K8S / "components" / "servicemonitor", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\ncomponents:\n  - {component}\n"
    )
    return render_dir(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_application(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in render(overlay))
    assert kinds == sorted(
        [
            "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
            "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler",
        ]
    )  # fmt: skip
    namespaced = [d for d in render(overlay) if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"convserve"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_rendered_objects_match_the_kubernetes_schema(name: str, version: str) -> None:
    docs = render(name)
    builtin = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    for doc in builtin:
        _validate(doc, version)
    if name == "kserve":
        (isvc,) = docs
        # the predictor is a PodSpec plus KServe's extension fields: check the
        # PodSpec part exactly as the API server will check the pods it makes
        pod_spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in KSERVE_EXTENSION}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}
        _validate(pod, version)


def test_schema_validation_rejects_a_broken_manifest() -> None:
    """Guard against a validator that accepts anything (e.g. a wrong schema dir)."""
    deployment = one(render("cpu"), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(AssertionError, match="replicas"):
        _validate(broken, "1.28")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_component_scrapes_the_service(tmp_path, overlay: str) -> None:
    docs = _with_servicemonitor(tmp_path, overlay)
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    # ...and the pod annotations no longer invite a second, duplicate scrape
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            _validate(doc, "1.28")
