"""Poll mode on a real server under load: a new version is copied in slowly, taken over
without one failed request, the old one removed; broken versions are reported, never served."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.model_repo import model_dir, shifted_version, tamper, write_slowly
from tests.service.serving import LiveServer, distinct_label_images, settings

CLIENTS = 8
IMAGES = distinct_label_images(3)  # v1 answers their labels, v2 (label + 1) % 10


def _poll_server(models: Path) -> LiveServer:
    return LiveServer(settings(model_dir=models, model_control="poll", model_poll_s=0.2))


def _index(client: httpx.Client) -> dict[tuple[str, str], dict]:
    r = client.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    return {(e["name"], e["version"]): e for e in r.json()}


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _metric(client: httpx.Client, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


class Load:
    """CLIENTS threads posting the same 3-image batch until stopped; every answer kept."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.answers: list[list[tuple[int, str | None, list[str]]]] = [[] for _ in range(CLIENTS)]
        self.ready_codes: list[int] = []
        self.threads = [threading.Thread(target=self._post, args=(i,)) for i in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self._probe))

    def _post(self, i: int) -> None:
        files = [("file", (f"{n}.png", data, "image/png")) for n, (_, data) in enumerate(IMAGES)]
        with self.server.client() as c:
            while not self.stop.is_set():
                r = c.post("/predict", files=files)
                if r.status_code != 200:
                    self.answers[i].append((r.status_code, None, [r.text]))
                    continue
                body = r.json()
                labels = [p["label"] for p in body["predictions"]]
                self.answers[i].append((200, body["model"]["version"], labels))

    def _probe(self) -> None:
        with self.server.client() as c:
            while not self.stop.is_set():
                self.ready_codes.append(c.get("/readyz").status_code)
                time.sleep(0.02)

    def versions_seen(self) -> set[str | None]:
        return {v for answers in self.answers for _, v, _ in answers}

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_a_new_version_takes_over_under_load_without_one_failed_request(tmp_path: Path) -> None:
    models = model_dir(tmp_path)
    v2 = shifted_version(tmp_path / "build")
    expected = {
        "1": [str(label) for label, _ in IMAGES],
        "2": [str((label + 1) % 10) for label, _ in IMAGES],
    }
    with _poll_server(models) as server, server.client() as c, Load(server) as load:
        _wait("v1 traffic", lambda: sum(map(len, load.answers)) >= 3 * CLIENTS)
        # copy version 2 in, file by file, model.onnx in slow chunks
        half_copied: list[dict] = []
        copier = threading.Thread(
            target=write_slowly,
            args=(models / "digits" / "2", v2),
            kwargs={"pause_s": 0.5, "chunks": 4},
        )
        copier.start()
        while copier.is_alive():
            entry = _index(c).get(("digits", "2"))
            if entry is not None and entry["state"] == "UNAVAILABLE":
                half_copied.append(entry)
                assert load.versions_seen() <= {"1"}, "a half-copied version was served"
            time.sleep(0.05)
        copier.join()
        _wait("the switch to version 2", lambda: "2" in load.versions_seen())
        assert _index(c)[("digits", "2")]["state"] == "READY"
        # remove version 1: it finishes its queued work and is unloaded
        shutil.rmtree(models / "digits" / "1")
        _wait("version 1 unloaded", lambda: ("digits", "1") not in _index(c))
        assert c.get("/models/digits").json()["versions"] == ["2"]
        old = c.post(
            "/predict",
            params={"version": "1"},
            content=IMAGES[0][1],
            headers={"Content-Type": "image/png"},
        )
        assert old.status_code == 404 and old.json()["error"]["code"] == "unknown_version"
        count_at_removal = sum(map(len, load.answers))
        _wait(
            "traffic after the removal",
            lambda: sum(map(len, load.answers)) > count_at_removal + 3 * CLIENTS,
        )
        served = {
            v: _metric(c, "convserve_model_version_info", model="digits", version=v)
            for v in ("1", "2")
        }
        loads = _metric(c, "convserve_model_loads_total", model="digits")
        reloaded = _metric(c, "convserve_model_last_reload_timestamp_seconds", model="digits")
    answers = [a for per_client in load.answers for a in per_client]
    failed = [a for a in answers if a[0] != 200]
    by_version = {v: sum(1 for a in answers if a[1] == v) for v in ("1", "2")}
    print(f"\nload test: {len(answers)} requests, {len(failed)} non-2xx, by version {by_version}")
    assert not failed, failed[:5]
    for _, version, labels in answers:  # never a mix within a request
        assert labels == expected[version], (version, labels)
    for per_client in load.answers:  # v1 then v2, never back
        versions = [v for _, v, _ in per_client]
        assert versions == sorted(versions, key=int), versions
    assert by_version["1"] > 0 and by_version["2"] > 0
    assert half_copied, "the half-copied version never showed in the index"
    assert all(e["reason"] for e in half_copied)
    assert any("sha256" in e["reason"] or "still being copied" in e["reason"] for e in half_copied)
    assert set(load.ready_codes) == {200} and len(load.ready_codes) > 10
    assert served == {"1": 0.0, "2": 1.0}
    assert loads is not None and loads >= 1 and reloaded is not None and reloaded > 0


def test_broken_versions_are_reported_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    models = model_dir(tmp_path)
    with _poll_server(models) as server, server.client() as c:
        # a tampered model.onnx: its sha256 no longer matches bundle.json
        shutil.copytree(models / "digits" / "1", models / "digits" / "3")
        tamper(models / "digits" / "3")
        # bytes onnxruntime cannot load, with a matching sha256: fails at load, not at verify
        garbage = models / "digits" / "2"
        files = shifted_version(tmp_path / "build")
        files["model.onnx"] = b"not an onnx model" * 100
        files["bundle.json"] = _with_sha(files["bundle.json"], files["model.onnx"])
        write_slowly(garbage, files, pause_s=0, chunks=1)
        _wait(
            "both versions in the index",
            lambda: {"2", "3"} <= {v for (_, v) in _index(c)},
        )
        _wait(
            "the load failure of version 2",
            lambda: "load failed" in _index(c)[("digits", "2")]["reason"],
        )
        index = _index(c)
        assert index[("digits", "3")]["state"] == "UNAVAILABLE"
        assert "sha256" in index[("digits", "3")]["reason"]
        assert index[("digits", "2")]["state"] == "UNAVAILABLE"
        assert index[("digits", "1")] == {
            "name": "digits",
            "version": "1",
            "state": "READY",
            "reason": "",
        }
        r = c.post("/predict", content=IMAGES[0][1], headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and r.json()["model"]["version"] == "1"
        assert c.get("/models/digits").json()["versions"] == ["1"]
        _wait(
            "both failures counted",
            lambda: (_metric(c, "convserve_model_load_failures_total", model="digits") or 0) >= 2,
        )
        ready_only = c.post("/v2/repository/index", json={"ready": True}).json()
        assert [(e["name"], e["version"]) for e in ready_only] == [("digits", "1")]


def test_a_new_model_name_appears_and_the_default_is_never_left_empty(tmp_path: Path) -> None:
    models = model_dir(tmp_path)
    with _poll_server(models) as server, server.client() as c:
        staging = models / ".incoming"
        shutil.copytree(models / "digits" / "1", staging)
        (models / "digits_b").mkdir()
        staging.rename(models / "digits_b" / "1")  # one atomic step, as docs/deployment.md says
        _wait("the new model", lambda: ("digits_b", "1") in _index(c))
        _wait("it serves", lambda: _index(c)[("digits_b", "1")]["state"] == "READY")
        names = [m["name"] for m in c.get("/models").json()["models"]]
        assert names == ["digits", "digits_b"]
        r = c.post(
            "/predict",
            params={"model": "digits_b"},
            content=IMAGES[0][1],
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200 and r.json()["model"]["name"] == "digits_b"
        assert _metric(c, "convserve_model_version_info", model="digits_b", version="1") == 1
        # the default model's only version removed: kept, and the index says why
        shutil.rmtree(models / "digits" / "1")
        _wait(
            "the kept version's reason",
            lambda: "default model" in _index(c).get(("digits", "1"), {}).get("reason", ""),
        )
        r = c.post("/predict", content=IMAGES[0][1], headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        # removing another model's only version unloads it
        shutil.rmtree(models / "digits_b")
        _wait("digits_b gone", lambda: ("digits_b", "1") not in _index(c))
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["digits"]


def _with_sha(bundle_json: bytes, model: bytes) -> bytes:
    bundle = json.loads(bundle_json)
    bundle["sha256"] = hashlib.sha256(model).hexdigest()
    return json.dumps(bundle).encode()
