"""The kustomizations render, and every rendered object is valid Kubernetes:
built-in kinds against the API's JSON schemas (kubernetes-validate, strict),
custom resources by their embedded pod spec and their references."""

from __future__ import annotations

import pytest
from deploy_support import (
    COMPOSED,
    KUSTOMIZATIONS,
    OVERLAYS,
    container_env,
    missing_tool,
    one,
    render,
    render_composed,
    server_container,
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


@pytest.mark.parametrize("name", list(COMPOSED))
def test_overlays_with_components_stay_valid(name: str) -> None:
    for doc in render_composed(name):
        if doc["kind"] not in CUSTOM_KINDS:
            _validate(doc, "1.28")


@pytest.mark.parametrize("name", list(COMPOSED))
def test_servicemonitor_component_scrapes_the_service(name: str) -> None:
    docs = render_composed(name)
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    # ...and the pod annotations no longer invite a second, duplicate scrape
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


def test_model_from_image_component_feeds_the_model_dir() -> None:
    docs = render_composed("gpu+all-components")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    model_dir = container_env(server_container(spec), docs)["CONVSERVE_MODEL_DIR"]
    (init,) = spec["initContainers"]
    (writes,) = [m for m in init["volumeMounts"] if m["mountPath"] == model_dir]
    (reads,) = [m for m in server_container(spec)["volumeMounts"] if m["mountPath"] == model_dir]
    assert writes["name"] == reads["name"] and reads["readOnly"] is True
    assert init["command"][-1].rstrip("/") == model_dir
    (volume,) = [v for v in spec["volumes"] if v["name"] == reads["name"]]
    assert "emptyDir" in volume
    sc = init["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
