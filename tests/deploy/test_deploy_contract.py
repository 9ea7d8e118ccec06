"""The deployment files and the server agree: every CONVSERVE_* they set is a
real, valid setting; every probe, scrape and health-check path is a route of
the app; and the server, started the way the CPU image starts it, turns
healthy and ready, keeps probes and metrics open behind an API key, exports
the autoscaler's metric, and exits on SIGTERM within the grace period."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from deploy_support import (
    DOCKERFILES,
    K8S,
    KUSTOMIZATIONS,
    ROOT,
    container_env,
    exec_form,
    healthcheck_command,
    one,
    render,
    server_container,
    stages,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from service.settings import Settings

PREFIX = "CONVSERVE_"
API_KEY = "deploy-contract-test-key"


SOURCES = [f"Dockerfile:{kind}" for kind in DOCKERFILES] + [
    f"k8s:{name}" for name in KUSTOMIZATIONS
]


def _setting_source(source: str) -> dict[str, str]:
    """The CONVSERVE_* variables one deployment file sets, with their values."""
    where, _, name = source.partition(":")
    if where == "Dockerfile":
        env = stages(DOCKERFILES[name])[1][-1].env()
    else:
        docs = render(name)
        if name == "kserve":
            spec = one(docs, "InferenceService")["spec"]["predictor"]
        else:
            spec = one(docs, "Deployment")["spec"]["template"]["spec"]
        env = container_env(server_container(spec), docs)
    return {k: v for k, v in env.items() if k.startswith(PREFIX)}


def _app_status(paths: set[str]) -> dict[str, int]:
    """GET each path on `create_app()` in process (no lifespan: models not loaded).

    Asking the app, rather than reading its route table, keeps this test off
    FastAPI internals: 404/405 means the path is not a GET route.
    """
    try:
        from service.app import create_app
    except ModuleNotFoundError as exc:  # only while the server is being written
        pytest.skip(f"service.app is not there yet: {exc}")
    app = create_app(Settings(model_dir=ROOT / "models"))

    async def ask() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)  # in process: no socket, no lifespan
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return {path: (await client.get(path)).status_code for path in paths}

    return asyncio.run(ask())


@pytest.mark.parametrize("source", SOURCES)
def test_every_convserve_variable_is_a_real_setting(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _setting_source(source)
    assert env, f"{source} sets no CONVSERVE_* variable at all"
    fields = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    unknown = set(env) - fields
    assert not unknown, f"{source} sets variables the server ignores: {sorted(unknown)}"
    # ...and each value parses as the server will parse it
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for name, value in env.items():
        field = name.removeprefix(PREFIX).lower()
        assert getattr(settings, field) is not None, f"{source}: {name}={value!r} not applied"


def test_setting_check_catches_an_unknown_variable() -> None:
    fields = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert "CONVSERVE_MAX_BATCH" not in fields and "CONVSERVE_MAX_BATCH_SIZE" in fields


def test_probe_scrape_and_healthcheck_paths_are_routes_of_the_app() -> None:
    used: set[str] = set()
    for name in KUSTOMIZATIONS:
        docs = render(name)
        if name == "kserve":
            spec = one(docs, "InferenceService")["spec"]["predictor"]
        else:
            pod = one(docs, "Deployment")["spec"]["template"]
            spec = pod["spec"]
            used.add(pod["metadata"]["annotations"]["prometheus.io/path"])
        container = server_container(spec)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container[probe]:  # gRPC probes: test_deploy_manifests
                used.add(container[probe]["httpGet"]["path"])
    for path in DOCKERFILES.values():
        probe = healthcheck_command(stages(path)[1][-1])[-1]
        used.update(re.findall(r"http://[^/]+(/[\w/]+)", probe))
    monitor = yaml.safe_load(
        (K8S / "components" / "servicemonitor" / "servicemonitor.yaml").read_text()
    )
    used.update(e["path"] for e in monitor["spec"]["endpoints"])
    assert used == {"/readyz", "/healthz", "/metrics"}
    status = _app_status(used | {"/no-such-path"})
    assert status.pop("/no-such-path") == 404  # the check can fail
    # /readyz is 503 here (nothing loaded, by design); 404/405 would mean no route
    assert status == {"/healthz": 200, "/metrics": 200, "/readyz": 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_env(port: int, grpc_port: int, site: Path) -> dict[str, str]:
    """The CPU image's environment, moved to this machine: loopback, free ports,
    the repository's models/ in place of /opt/convserve/models, and the installed
    wheel in `site` (not the source tree) as the server's code."""
    image = stages(DOCKERFILES["cpu"])[1][-1].env()
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({k: v for k, v in image.items() if k.startswith(PREFIX)})
    assert image["CONVSERVE_MODEL_DIR"] == "/opt/convserve/models"
    env.update(
        CONVSERVE_HOST="127.0.0.1",  # the image binds 0.0.0.0; tests stay on loopback
        CONVSERVE_PORT=str(port),
        CONVSERVE_GRPC_PORT=str(grpc_port),  # not the image's 8001: tests run side by side
        CONVSERVE_MODEL_DIR=str(ROOT / "models"),
        CONVSERVE_API_KEY=API_KEY,
        CONVSERVE_LOG_LEVEL="warning",
        PYTHONPATH=str(site),
    )
    return env


def _status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


@contextmanager
def _held_request(url: str) -> Iterator[tuple[threading.Event, dict]]:
    """A /predict whose upload stalls half-way until released: a request that is
    in flight (counted by the server) for as long as the test wants."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    png = buffer.getvalue()
    release, result = threading.Event(), {}

    def body() -> Iterator[bytes]:
        yield png[:20]
        release.wait(30)
        yield png[20:]

    def send() -> None:
        headers = {"Content-Type": "image/png", "X-API-Key": API_KEY}
        result["response"] = httpx.post(
            f"{url}/predict", content=body(), headers=headers, timeout=30
        )

    sender = threading.Thread(target=send)
    sender.start()

    def in_flight() -> bool:  # the held request, plus this /metrics request itself
        text = httpx.get(f"{url}/metrics", timeout=5).text
        found = re.search(r"^convserve_requests_in_flight (\S+)", text, re.M)
        return found is not None and float(found.group(1)) >= 2

    try:
        _until(in_flight, 10, "the held request reaching the server")
        yield release, result
    finally:
        release.set()
        sender.join(30)


def _until(check, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def test_server_started_like_the_image_passes_its_probes_and_drains(
    tmp_path: Path, installed_server: Path
) -> None:
    if not (ROOT / "models" / "digits" / "1" / "model.onnx").exists():
        pytest.skip("models/digits/1 is not committed yet")
    _app_status(set())  # skips while service.app does not exist
    final = stages(DOCKERFILES["cpu"])[1][-1]
    (entry,) = exec_form(final.all("ENTRYPOINT")[-1].args)
    executable = installed_server / "bin" / entry  # the console script the wheel installs
    port, grpc_port = _free_port(), _free_port()
    env = _image_env(port, grpc_port, installed_server)
    # the code that runs is the installed wheel's, not the checkout's
    where = [sys.executable, "-c", "import service; print(service.__file__)"]
    found = subprocess.run(where, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert Path(found.stdout.strip()).is_relative_to(installed_server), found
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([executable], env=env, cwd=tmp_path, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    docs = render("cpu")
    deployment = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(deployment)
    try:
        # Docker's HEALTHCHECK, verbatim (its `python` is this interpreter)
        health = healthcheck_command(final)
        health = [sys.executable, *health[1:]]

        def healthy() -> bool:
            assert proc.poll() is None, "server exited during start-up"
            return subprocess.run(health, env=env, capture_output=True, timeout=10).returncode == 0

        _until(healthy, 60, "HEALTHCHECK passing")
        # the startupProbe's whole budget is the most /readyz may take
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]

        def ready() -> bool:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        _until(ready, min(budget, 90), "/readyz 200")
        # probes and scrapes carry no credentials: they must not need the key
        with httpx.Client(base_url=url, timeout=5) as client:
            for path in ("/healthz", "/readyz", "/metrics"):
                assert client.get(path).status_code == 200, path
            assert client.get("/models").status_code == 401  # ...but the API does
            ok = client.get("/models", headers={"Authorization": f"Bearer {API_KEY}"})
            assert ok.status_code == 200
            metrics = client.get("/metrics").text
        # the GPU autoscaler's metric, as Prometheus Adapter's rule selects it
        hpa = one(render("gpu"), "HorizontalPodAutoscaler")["spec"]["metrics"][0]
        metric = hpa["pods"]["metric"]["name"]
        adapter = yaml.safe_load(
            (K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text()
        )
        (rule,) = adapter["rules"]["custom"]
        assert rule["seriesQuery"].startswith(metric + "{") and rule["name"]["as"] == metric
        assert re.search(rf"^{metric}\{{[^}}]*model=\"digits\"", metrics, re.M), metrics[:2000]

        # the readinessProbe: grpc.health.v1 on the gRPC port, as the kubelet asks it
        service = container["readinessProbe"]["grpc"].get("service", "")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING

        # SIGTERM, as the kubelet sends it after the preStop pause, while a
        # request is in flight: readiness must drop and the request be answered
        pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = deployment["terminationGracePeriodSeconds"] - pause
        with _held_request(url) as (release, result):
            proc.send_signal(signal.SIGTERM)
            _until(lambda: _status(f"{url}/readyz") == 503, 10, "/readyz 503 while draining")
            release.set()
        # ...and gets a whole answer, not a reset connection: a prediction, or
        # (the server's choice for a request still uploading when the drain
        # began) a clean 503 telling the client to retry on another replica
        answer = result["response"]
        if answer.status_code == 200:
            assert len(answer.json()["predictions"]) == 1
        else:
            assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
            assert answer.json()["error"]["code"] == "draining"
        code = proc.wait(timeout=grace)
        # uvicorn re-raises the SIGTERM it handled once shut down: -15 is its normal exit
        assert code in (0, -signal.SIGTERM), f"exit status {code} after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        if sys.exc_info()[0] is not None:
            print((tmp_path / "server.log").read_text()[-4000:])
