"""Real servers for the tests: uvicorn in a thread, or `python -m service` in a subprocess.

Both listen on 127.0.0.1 on a free port (the kernel picks it) and are reached
with real HTTP (httpx). Also the committed digits model's images and an
in-process onnxruntime reference, so answers can be checked against it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import uvicorn
from PIL import Image

from service.app import create_app
from service.bundle import read_bundle
from service.preprocess import preprocess
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DIGITS = MODELS / "digits" / "1"


def settings(**overrides: object) -> Settings:
    """Test settings: the committed models, quiet logs, gRPC off (`grpc_port=free_port()`
    turns it on), everything else overridable."""
    values: dict[str, object] = {
        "model_dir": MODELS,
        "log_level": "warning",
        "providers": "cpu",
        "grpc_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


def free_port() -> int:
    """A port nothing listens on now (for gRPC, whose 0 means off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `create_app(settings)` in a background thread."""

    def __init__(self, cfg: Settings | None = None) -> None:
        self.settings = cfg or settings()
        self.app = create_app(self.settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        wait_ready(self.url, lambda: self._thread.is_alive())
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._sock.close()

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    @property
    def grpc_target(self) -> str:
        """host:port of the gRPC front door (started with `settings(grpc_port=free_port())`)."""
        return f"127.0.0.1:{self.app.state.grpc.port}"


def wait_ready(url: str, alive, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server stopped before it became ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready in {timeout} s")


class ServerProcess:
    """`python -m service` in a subprocess; the port is the one uvicorn reports."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSERVE_")}
        full_env.update({"PYTHONPATH": str(ROOT), "CONVSERVE_MODEL_DIR": str(MODELS)})
        full_env["CONVSERVE_GRPC_PORT"] = "0"  # not 8001: tests run side by side
        # one process unless a test asks for more (the default, auto, is one per CPU:
        # tests/service/test_worker_count.py)
        full_env["CONVSERVE_WORKERS"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", "0", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: deque[str] = deque(maxlen=2000)
        self.url: str | None = None
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                self._found.set()
        self._found.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self._found.wait(timeout)
        if self.url is None:
            raise RuntimeError(f"server did not start:\n{self.output}")
        wait_ready(self.url, lambda: self.proc.poll() is None, timeout)
        return self

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ---- the committed digits model, its images and an in-process reference -------


@cache
def digit_images() -> list[tuple[int, bytes]]:
    """(label, PNG) for scikit-learn's digits, drawn as training/digits.py draws them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    out = []
    for image, label in zip(pixels[:200], digits.target[:200], strict=True):
        picture = Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        out.append((int(label), buf.getvalue()))
    return out


@cache
def reference_session() -> ort.InferenceSession:
    return ort.InferenceSession(str(DIGITS / "model.onnx"), providers=["CPUExecutionProvider"])


def reference(blobs: list[bytes], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """In-process preprocess + onnxruntime on the same batch, no HTTP."""
    bundle = read_bundle(DIGITS)
    batch = np.stack(
        [preprocess(b, bundle.input, bundle.preprocessing, max_pixels=10**8) for b in blobs]
    )
    names = outputs or ["probabilities"]
    return dict(zip(names, reference_session().run(names, {"image": batch}), strict=True))


def distinct_label_images(count: int) -> list[tuple[int, bytes]]:
    """`count` digit images whose reference predictions are correct, labels cycling 0-9."""
    by_label: dict[int, list[bytes]] = {}
    images = digit_images()
    predicted = reference([b for _, b in images])["probabilities"].argmax(axis=1)
    for (label, data), guess in zip(images, predicted, strict=True):
        if guess == label:
            by_label.setdefault(label, []).append(data)
    out = []
    for i in range(count):
        label = i % 10
        pool = by_label[label]
        out.append((label, pool[(i // 10) % len(pool)]))
    return out


def answer_probabilities(answer: dict, classes: list[str] | None = None) -> np.ndarray:
    """A /predict answer -> (N, classes) float32 in class order, rebuilt from each image's
    top_k (ask for top_k = every class); `classes` defaults to the digits model's."""
    classes = classes if classes is not None else read_bundle(DIGITS).classes
    rows = np.zeros((len(answer["predictions"]), len(classes)), dtype=np.float32)
    for row, prediction in zip(rows, answer["predictions"], strict=True):
        for entry in prediction["top_k"]:
            row[classes.index(entry["label"])] = entry["probability"]
    return rows
