"""Explicit mode: Triton's repository extension with tritonclient and the API key; load and
unload cycles free their onnxruntime sessions (RSS of a server process); the refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service.model_repo import model_dir, tamper
from tests.service.serving import ROOT, LiveServer, ServerProcess, digit_images, settings

KEY = "lifecycle-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEVEN = (ROOT / "tests" / "data" / "seven.png").read_bytes()


@pytest.fixture
def explicit(tmp_path: Path):
    models = model_dir(tmp_path, "digits", "spare")
    cfg = settings(model_dir=models, model_control="explicit", api_key=KEY)
    with LiveServer(cfg) as server:
        yield server, models


def _client(server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def _states(client: triton.InferenceServerClient) -> dict[tuple[str, str], str]:
    index = client.get_model_repository_index(headers=AUTH)
    return {(e["name"], e["version"]): e["state"] for e in index}


def test_tritonclient_index_load_and_unload(explicit) -> None:
    server, models = explicit
    client = _client(server)
    assert _states(client) == {("digits", "1"): "READY", ("spare", "1"): "READY"}
    client.unload_model("spare", headers=AUTH)
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index(headers=AUTH)}
    assert index[("spare", "1")]["state"] == "UNAVAILABLE"
    assert index[("spare", "1")]["reason"] == "unloaded"
    assert not client.is_model_ready("spare", headers=AUTH)
    with server.client(headers=AUTH) as c:
        r = c.post("/predict", params={"model": "spare"}, content=SEVEN,
                   headers={"Content-Type": "image/png"})  # fmt: skip
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    # a new version on disk is only picked up when asked for
    shutil.copytree(models / "spare" / "1", models / "spare" / "2")
    time.sleep(0.3)
    assert ("spare", "2") not in _states(client) or _states(client)[("spare", "2")] != "READY"
    client.load_model("spare", headers=AUTH)
    assert _states(client)[("spare", "2")] == "READY"
    assert client.is_model_ready("spare", "2", headers=AUTH)
    with server.client(headers=AUTH) as c:
        r = c.post("/predict", params={"model": "spare"}, content=SEVEN,
                   headers={"Content-Type": "image/png"})  # fmt: skip
        assert r.status_code == 200 and r.json()["model"]["version"] == "2"
        assert c.get("/models/spare").json()["versions"] == ["1", "2"]


def test_the_repository_needs_the_api_key(explicit) -> None:
    server, _ = explicit
    client = _client(server)
    for call in (
        lambda: client.get_model_repository_index(),
        lambda: client.load_model("spare"),
        lambda: client.unload_model("spare", headers={"Authorization": "Bearer wrong"}),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "401" or "API key" in info.value.message()
    assert _states(client)[("spare", "1")] == "READY"  # nothing was unloaded


def test_refusals_say_why(explicit) -> None:
    server, models = explicit
    client = _client(server)
    with pytest.raises(InferenceServerException, match="default model"):
        client.unload_model("digits", headers=AUTH)
    with pytest.raises(InferenceServerException, match="no model 'nothing'"):
        client.load_model("nothing", headers=AUTH)
    with pytest.raises(InferenceServerException, match="not supported"):
        client.load_model("spare", headers=AUTH, config='{"backend": "onnxruntime"}')
    # a model whose only version is corrupt: 409 with the reason, nothing served
    shutil.copytree(models / "spare" / "1", models / "broken" / "1")
    tamper(models / "broken" / "1")
    with server.client(headers=AUTH) as c:
        r = c.post("/v2/repository/models/broken/load")
        assert r.status_code == 409, r.text
        assert "sha256" in r.json()["error"] and "broken" in r.json()["error"]
        r = c.post("/v2/repository/models/digits/unload")
        assert r.status_code == 409 and "default model" in r.json()["error"]
        r = c.post("/v2/repository/index", content=b"[1, 2]")
        assert r.status_code == 400 and "JSON object" in r.json()["error"]
    assert _states(client)[("broken", "1")] == "UNAVAILABLE"
    assert _states(client)[("digits", "1")] == "READY"


def test_load_and_unload_need_explicit_mode(tmp_path: Path) -> None:
    cfg = settings(model_dir=model_dir(tmp_path), model_control="poll")
    with LiveServer(cfg) as server, server.client() as c:
        r = c.post("/v2/repository/models/digits/unload")
        assert r.status_code == 409
        assert "CONVSERVE_MODEL_CONTROL=explicit" in r.json()["error"]
        assert c.post("/v2/repository/index").status_code == 200


def test_explicit_mode_with_several_workers_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--workers", "2", "--model-control", "explicit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "model_control=explicit needs workers=1" in result.stderr
    assert "Traceback" not in result.stderr


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_twenty_load_unload_cycles_free_their_sessions(tmp_path: Path) -> None:
    models = model_dir(tmp_path, "digits", "spare")
    server = ServerProcess(
        "--model-control", "explicit", "--log-level", "info",
        env={"CONVSERVE_MODEL_DIR": str(models), "CONVSERVE_PROVIDERS": "cpu"},
    )  # fmt: skip
    images = [data for _, data in digit_images()[:8]]
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    rss: list[int] = []
    try:
        server.start(timeout=60)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(20):
                assert c.post("/v2/repository/models/spare/unload").status_code == 200
                assert c.post("/v2/repository/models/spare/load").status_code == 200
                for _ in range(5):  # use the new session: batches, all outputs
                    r = c.post("/predict", params={"model": "spare"}, files=files)
                    assert r.status_code == 200
                rss.append(_rss_kib(server.proc.pid))
    finally:
        server.stop()
    freed = server.output.count("spare version 1: queued work finished, onnxruntime session freed")
    print(f"\nRSS after cycle 1: {rss[0] / 1024:.1f} MiB, after cycle 20: {rss[-1] / 1024:.1f} MiB "
          f"({(rss[-1] / rss[0] - 1) * 100:+.1f} %); sessions freed: {freed}")  # fmt: skip
    assert freed == 20, server.output[-3000:]
    assert rss[-1] <= rss[0] * 1.10, rss
