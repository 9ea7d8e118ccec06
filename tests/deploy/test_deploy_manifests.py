"""What the rendered manifests promise, checked across objects: selectors that
select, ports that exist, the hardening the issue asks for, GPU scheduling,
autoscaling signals and the shutdown arithmetic."""

from __future__ import annotations

import pytest
from deploy_support import OVERLAYS, container_env, one, render, server_container

from service.grpc.server import HealthServicer
from service.settings import Settings

SECRET_SOURCES = {"CONVSERVE_API_KEY"}


def _pod(name: str) -> dict:
    docs = render(name)
    if name == "kserve":
        return {"metadata": {}, "spec": one(docs, "InferenceService")["spec"]["predictor"]}
    return one(docs, "Deployment")["spec"]["template"]


def _drain_s(env: dict[str, str]) -> float:
    return float(
        env.get("CONVSERVE_DRAIN_TIMEOUT_S", Settings.model_fields["drain_timeout_s"].default)
    )


@pytest.mark.parametrize("name", [*OVERLAYS, "kserve"])
def test_pod_is_hardened(name: str) -> None:
    spec = _pod(name)["spec"]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] >= 10000
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    container = server_container(spec)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the read-only root still has a writable /tmp, backed by an emptyDir
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()


@pytest.mark.parametrize("name", [*OVERLAYS, "kserve"])
def test_termination_grace_outlasts_prestop_and_drain(name: str) -> None:
    """SIGKILL must never cut a drain short.

    The kubelet's grace period covers the preStop hook *and* the shutdown.
    service/app.py drains in two bounded phases: in-flight requests (up to
    CONVSERVE_DRAIN_TIMEOUT_S), then uvicorn's graceful shutdown (again up
    to CONVSERVE_DRAIN_TIMEOUT_S), hence the factor 2.
    """
    docs, spec = render(name), _pod(name)["spec"]
    container = server_container(spec)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert pause >= 3, "endpoints need a few seconds to drop the pod before the drain starts"
    drain = _drain_s(container_env(container, docs))
    assert spec["terminationGracePeriodSeconds"] > pause + 2 * drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_select_the_pods_and_ports_they_mean(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = server_container(deployment["spec"]["template"]["spec"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    assert (
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http", "grpc"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["minReplicas"] >= 2, "one pod cannot survive its own rollout or a node drain"
    account = one(docs, "ServiceAccount")["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account

    # the port the server listens on is the one the probes, Service and scrape use
    env = container_env(container, docs)
    assert ports["http"] == int(env["CONVSERVE_PORT"])
    assert ports["grpc"] == int(env["CONVSERVE_GRPC_PORT"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "grpc"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["CONVSERVE_PORT"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_readyz_for_start_grpc_health_for_readiness_and_healthz_for_liveness(
    overlay: str,
) -> None:
    container = server_container(_pod(overlay)["spec"])
    expected = {"startupProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    # grpc.health.v1 answers SERVING exactly when /readyz is 200 (tests/service/test_grpc.py);
    # a gRPC probe takes a port number, which must be the one the server listens on
    grpc_probe = container["readinessProbe"]["grpc"]
    env = container_env(container, render(overlay))
    assert grpc_probe["port"] == int(env["CONVSERVE_GRPC_PORT"])
    assert grpc_probe["service"] in HealthServicer.SERVICES


def test_gpu_overlay_schedules_on_a_gpu_and_uses_it() -> None:
    docs = render("gpu")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(spec)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container_env(container, docs)["CONVSERVE_PROVIDERS"] == "cuda"
    assert container["image"].endswith("-gpu")
    (metric,) = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "convserve_queue_depth"


def test_cpu_overlay_requests_no_gpu_and_scales_on_cpu() -> None:
    docs = render("cpu")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(spec)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in spec and "nodeSelector" not in spec
    env = container_env(container, docs)
    assert env["CONVSERVE_PROVIDERS"] == "cpu" and container["image"].endswith("-cpu")
    # onnxruntime's thread pool matches the CPU it may use
    assert int(env["CONVSERVE_INTRA_OP_THREADS"]) == int(container["resources"]["limits"]["cpu"])
    (metric,) = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert (
        metric["resource"]["name"] == "cpu"
        and metric["resource"]["target"]["type"] == "Utilization"
    )


@pytest.mark.parametrize("name", [*OVERLAYS, "kserve"])
def test_api_key_comes_from_a_secret_never_a_literal(name: str) -> None:
    docs = render(name)
    container = server_container(_pod(name)["spec"])
    (var,) = [v for v in container["env"] if v["name"] == "CONVSERVE_API_KEY"]
    assert var["valueFrom"]["secretKeyRef"]["name"] == "convserve-api-key"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not SECRET_SOURCES & doc["data"].keys()


def test_kserve_predictor_declares_http_and_grpc_as_kserve_reads_them() -> None:
    """HTTP first (KServe's Service maps port 80 to the first container port), gRPC
    named `h2c` (KServe's name for it) on the port the server binds."""
    docs = render("kserve")
    isvc = one(docs, "InferenceService")
    container = server_container(isvc["spec"]["predictor"])
    env = container_env(container, docs)
    ports = [(p["name"], p["containerPort"]) for p in container["ports"]]
    assert ports == [
        ("http1", int(env["CONVSERVE_PORT"])),
        ("h2c", int(env["CONVSERVE_GRPC_PORT"])),
    ]
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/port"] == env["CONVSERVE_PORT"]
