"""Poll mode with two worker processes: each follows the model directory on its own, and
both serve the new version within one poll period (plus its load) of each other."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.service.model_repo import model_dir, shifted_version
from tests.service.serving import ROOT, ServerProcess

SEVEN = (ROOT / "tests" / "data" / "seven.png").read_bytes()
POLL_S = 0.5


def _version(url: str) -> tuple[int, str | None]:
    with httpx.Client(timeout=30) as c:  # a fresh connection: either worker may accept it
        r = c.post(url + "/predict", content=SEVEN, headers={"Content-Type": "image/png"})
    body = r.json() if r.status_code == 200 else {}
    return r.status_code, body.get("model", {}).get("version")


def test_every_worker_reaches_the_new_version(tmp_path: Path) -> None:
    models = model_dir(tmp_path)
    server = ServerProcess(
        "--workers", "2", "--model-control", "poll", "--model-poll-s", str(POLL_S),
        "--log-format", "json",
        env={"CONVSERVE_MODEL_DIR": str(models), "CONVSERVE_PROVIDERS": "cpu"},
    )  # fmt: skip
    try:
        server.start(timeout=90)
        deadline = time.monotonic() + 90
        while server.output.count('"ready: digits/1') < 2:
            assert time.monotonic() < deadline, server.output[-3000:]
            time.sleep(0.05)
        staging = models / "digits" / ".2.tmp"
        for name, data in shifted_version(tmp_path / "build").items():
            staging.mkdir(exist_ok=True)
            (staging / name).write_bytes(data)
        staging.rename(models / "digits" / "2")
        published = time.monotonic()
        answers: list[tuple[float, int, str | None]] = []
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() - published < 60:
                for status, version in pool.map(_version, [server.url] * 16):
                    answers.append((time.monotonic() - published, status, version))
                loaded = server.output.count("digits version 2 loaded and warmed up")
                recent = [v for _, _, v in answers[-32:]]
                if loaded == 2 and len(recent) == 32 and set(recent) == {"2"}:
                    break
        assert {s for _, s, _ in answers} == {200}
        assert server.output.count("digits version 2 loaded and warmed up") == 2, server.output[
            -3000:
        ]
        first_v2 = min(t for t, _, v in answers if v == "2")
        last_v1 = max((t for t, _, v in answers if v == "1"), default=0.0)
        print(
            f"\nworkers: first v2 answer {first_v2:.2f} s after publishing, last v1 {last_v1:.2f} s"
        )
        # both workers poll every POLL_S: they switch within one period (plus a load) of each other
        assert last_v1 - first_v2 < POLL_S + 10
    finally:
        server.terminate()
        try:
            server.proc.wait(30)
        finally:
            server.stop()
