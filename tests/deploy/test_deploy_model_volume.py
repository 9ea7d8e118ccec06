"""Rolling out a model without a new image: the model volume (Deployment component and
KServe variant) is polled by the servers, and the publish Job fills it atomically."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import (
    ROOT,
    container_env,
    one,
    render,
    render_composed,
    server_container,
)
from test_deploy_render import KSERVE_EXTENSION, _validate

from service.lifecycle import Scanner
from service.settings import Settings

CLAIM = "convserve-models"


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        if name.startswith("CONVSERVE_"):
            monkeypatch.setenv(name, value)
    return Settings()


def _claim_mount(spec: dict, container: dict) -> dict:
    (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == CLAIM
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return mount


def test_deployment_component_polls_a_read_only_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render_composed("cpu+model-volume")
    assert one(docs, "PersistentVolumeClaim")["metadata"]["name"] == CLAIM
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(spec)
    settings = _settings(container_env(container, docs), monkeypatch)
    assert settings.model_control == "poll" and settings.model_poll_s <= 10
    mount = _claim_mount(spec, container)
    assert mount["mountPath"] == str(settings.model_dir) and mount["readOnly"] is True
    # nothing is downloaded at start, so the NetworkPolicy's "no egress" stays right
    assert "initContainers" not in spec
    assert one(docs, "NetworkPolicy")["spec"]["egress"] == []


@pytest.mark.parametrize("version", ["1.28", "latest"])
def test_kserve_variant_is_valid_and_polls_the_claim(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render("kserve-model-volume")
    _validate(one(docs, "PersistentVolumeClaim"), version)
    predictor = one(docs, "InferenceService")["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_EXTENSION}
    _validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}, version
    )
    container = server_container(predictor)
    env = container_env(container, docs)
    settings = _settings(env, monkeypatch)
    assert settings.model_control == "poll"
    mount = _claim_mount(predictor, container)
    assert mount["mountPath"] == str(settings.model_dir) and mount["readOnly"] is True
    # mounted, not downloaded: no storage-initializer, so no egress to allow
    assert "storageUri" not in predictor and "STORAGE_URI" not in env
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("version", ["1.28", "latest"])
def test_publish_job_writes_the_claim_the_servers_read(version: str) -> None:
    docs = render("publish-model")
    job = one(docs, "Job")
    _validate(job, version)
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mount = _claim_mount(spec, container)
    server = server_container(
        one(render_composed("cpu+model-volume"), "Deployment")["spec"]["template"]["spec"]
    )
    assert mount["mountPath"] == next(
        m["mountPath"] for m in server["volumeMounts"] if m["name"] == "models"
    )
    assert not mount.get("readOnly")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # its own NetworkPolicy: the Job copies from its image to the volume and talks to nobody
    policy = one(docs, "NetworkPolicy")["spec"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["egress"] == [] and policy["ingress"] == []


def test_publish_script_adds_whole_versions_and_never_overwrites(tmp_path: Path) -> None:
    """The Job's own shell script, run here on directories standing in for the image and
    the claim: new versions appear complete (renamed into place), old ones stay as they are."""
    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh here")
    job = one(render("publish-model"), "Job")
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    image, claim = tmp_path / "image", tmp_path / "claim"
    shutil.copytree(ROOT / "models" / "digits" / "1", image / "digits" / "2")
    shutil.copytree(ROOT / "models" / "digits" / "1", claim / "digits" / "1")
    (claim / "digits" / "1" / "marker").write_text("published earlier")
    shutil.copytree(ROOT / "models" / "digits" / "1", image / "digits" / "1")
    script = script.replace("/opt/convserve/models", str(claim)).replace("/models/", f"{image}/")
    for _ in range(2):  # a second run finds everything published
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    assert "digits/1 is already published" in out.stdout
    assert (claim / "digits" / "1" / "marker").exists()
    assert sorted(p.name for p in (claim / "digits").iterdir()) == ["1", "2"]  # no .tmp left
    found = Scanner(claim).scan()["digits"]
    assert found["2"].valid and found["1"].valid
