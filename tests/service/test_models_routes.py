"""/models, /models/{name}, versions, /healthz, /readyz, /metrics, request ids, JSON logs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.bundle import read_bundle, write_bundle
from tests.service.serving import DIGITS, LiveServer, distinct_label_images, settings


def test_models_lists_the_digits_model(client: httpx.Client) -> None:
    doc = client.get("/models").json()
    assert doc["default"] == "digits"
    (entry,) = [m for m in doc["models"] if m["name"] == "digits"]
    assert entry["provider"] == "CPUExecutionProvider"


def test_model_metadata(client: httpx.Client) -> None:
    meta = client.get("/models/digits").json()
    bundle = read_bundle(DIGITS)
    assert meta["name"] == "digits" and meta["version"] == "1" and meta["versions"] == ["1"]
    assert meta["provider"] == "CPUExecutionProvider"
    assert meta["classes"] == bundle.classes
    assert meta["input"] == bundle.input.model_dump()
    assert meta["preprocessing"]["rescale"] == bundle.preprocessing.rescale
    assert [(f["name"], f["kind"], f["shape"]) for f in meta["feature_maps"]] == [
        (f.name, f.kind, f.shape) for f in bundle.feature_maps
    ]


def test_probes_and_request_id(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    r = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert r.headers["X-Request-ID"] == "trace-123"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_probes_answer_head_too(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        r = client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""


def test_metrics_exposition(client: httpx.Client) -> None:
    _, data = distinct_label_images(1)[0]
    client.post("/predict", content=data, headers={"Content-Type": "image/png"})
    client.post("/predict", content=b"x", headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    ok = (
        "convserve_requests_total",
        (("method", "POST"), ("route", "/predict"), ("status", "200")),
    )
    bad = (
        "convserve_requests_total",
        (("method", "POST"), ("route", "/predict"), ("status", "400")),
    )
    assert samples[ok] >= 1 and samples[bad] >= 1
    provider = (
        "convserve_model_provider",
        (("model", "digits"), ("provider", "CPUExecutionProvider"), ("version", "1")),
    )
    assert samples[provider] == 1
    assert samples[("convserve_ready", ())] == 1
    names = {name for name, _ in samples}
    for needed in [
        "convserve_request_duration_seconds_bucket",
        "convserve_queue_wait_seconds_bucket",
        "convserve_batch_size_bucket",
        "convserve_inference_seconds_bucket",
        "convserve_images_total",
        "convserve_queue_depth",
    ]:
        assert needed in names, needed


def _copy_version(src: Path, dst: Path, version: str) -> None:
    shutil.copytree(src, dst)
    bundle = read_bundle(dst)
    write_bundle(bundle.model_copy(update={"version": version}), dst)


def test_highest_version_served_older_addressable(tmp_path: Path) -> None:
    for version in ("1", "2", "10"):
        _copy_version(DIGITS, tmp_path / "digits" / version, version)
    (tmp_path / "digits" / "notes").mkdir()  # not a version: ignored
    _, data = distinct_label_images(1)[0]
    png = {"Content-Type": "image/png"}
    with LiveServer(settings(model_dir=tmp_path, max_batch_size=2)) as live, live.client() as c:
        meta = c.get("/models/digits").json()
        assert meta["version"] == "10" and meta["versions"] == ["1", "2", "10"]
        assert c.get("/models/digits?version=2").json()["version"] == "2"
        assert c.post("/predict", content=data, headers=png).json()["model"]["version"] == "10"
        r = c.post("/predict?version=2", content=data, headers=png)
        assert r.json()["model"] == {"name": "digits", "version": "2"}


def test_json_logs_one_line_per_request(capfd) -> None:
    cfg = settings(log_format="json", log_level="info")
    with LiveServer(cfg) as live, live.client() as c:
        c.get("/models", headers={"X-Request-ID": "json-log-test"})
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    mine = [doc for doc in lines if doc.get("request_id") == "json-log-test"]
    assert len(mine) == 1
    assert (
        mine[0]["status"] == 200 and mine[0]["path"] == "/models" and mine[0]["route"] == "/models"
    )
    assert mine[0]["logger"] == "convserve.access" and "duration_ms" in mine[0]


def test_readyz_is_503_until_warm_up_finishes() -> None:
    # warm-up runs one batch per bucket up to 2048 images, long enough to be seen
    live = LiveServer(settings(max_batch_size=2048))
    live._thread.start()
    seen: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(live.url + "/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.01)
                continue
            body = r.json()
            seen.append((r.status_code, body.get("status") or body["error"]["code"]))
            if r.status_code == 200:
                break
            assert r.headers["Retry-After"] == "1"
            time.sleep(0.01)
        assert httpx.get(live.url + "/healthz").status_code == 200
    finally:
        live.__exit__(None, None, None)
    assert seen[0] == (503, "starting"), seen
    assert seen[-1] == (200, "ready"), seen
