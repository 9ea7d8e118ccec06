"""gRPC calls in the request metrics the alert rules and the dashboard read.

Real calls with tritonclient.grpc against a live server, then a real /metrics
scrape: each call is counted under its method path, with the HTTP method of
its REST twin (POST for ModelInfer) and the HTTP status the same error gets
over REST, so the rules' POST ratios (5xx, 503/504 shedding) cover gRPC.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.service.grpc_support import FULL_QUEUE, KEY, bytes_request, infer_each, stub
from tests.service.hardening_support import slow_jpeg
from tests.service.serving import (
    ROOT,
    LiveServer,
    ServerProcess,
    distinct_label_images,
    free_port,
    settings,
)

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"
READY = "/inference.GRPCInferenceService/ServerReady"
METADATA = "/inference.GRPCInferenceService/ModelMetadata"
CHECK = "/grpc.health.v1.Health/Check"
HEADERS = {"authorization": f"Bearer {KEY}"}
RULES = ROOT / "k8s" / "monitoring" / "convserve-rules.yaml"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(settings(grpc_port=free_port(), api_key=KEY)) as server:
        yield server


def _requests(url: str) -> dict[tuple[str, str, str], float]:
    """convserve_requests_total by (route, method, status), from a real scrape."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "convserve_requests_total":
                out[(s.labels["route"], s.labels["method"], s.labels["status"])] = s.value
    return out


def _latency_count(server: LiveServer, route: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "convserve_request_duration_seconds_count" and s.labels["route"] == route:
                return s.value
    return 0.0


def _grew(server: LiveServer, before: dict, key: tuple[str, str, str], by: float = 1) -> None:
    """Wait until `key` grew by `by` (exactly)."""
    until = time.monotonic() + 10
    while time.monotonic() < until:
        now = _requests(server.url).get(key, 0)
        if now - before.get(key, 0) >= by:
            assert now - before.get(key, 0) == by, (key, now, before.get(key))
            return
        time.sleep(0.05)
    raise AssertionError(f"{key} did not grow by {by}: {_requests(server.url)}")


def _image(n: int = 1) -> tgrpc.InferInput:
    tensor = tgrpc.InferInput("image_bytes", [n], "BYTES")
    tensor.set_data_from_numpy(np.array([d for _, d in distinct_label_images(n)], dtype=object))
    return tensor


def test_inference_calls_are_counted_as_posts_with_their_status(live: LiveServer) -> None:
    before = _requests(live.url)
    latency_before = _latency_count(live, INFER)
    with tgrpc.InferenceServerClient(live.grpc_target) as client:
        for _ in range(2):
            client.infer("digits", [_image()], headers=HEADERS)
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            client.infer("no-such-model", [_image()], headers=HEADERS)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.infer("digits", [_image()])
        bad = tgrpc.InferInput("image_bytes", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not an image"], dtype=object))
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
            client.infer("digits", [bad], headers=HEADERS)
    _grew(live, before, (INFER, "POST", "200"), by=2)
    _grew(live, before, (INFER, "POST", "404"))
    _grew(live, before, (INFER, "POST", "401"))
    # the same status an undecodable upload gets from POST /v2/models/digits/infer
    with httpx.Client(base_url=live.url, headers=HEADERS) as http:
        rest = http.post(
            "/v2/models/digits/infer",
            json={
                "inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                            "data": ["not an image"]}]
            },
        )  # fmt: skip
    assert rest.status_code >= 400
    _grew(live, before, (INFER, "POST", str(rest.status_code)))
    assert _latency_count(live, INFER) - latency_before == 5


def test_probes_and_metadata_are_counted_as_gets(live: LiveServer) -> None:
    before = _requests(live.url)
    with tgrpc.InferenceServerClient(live.grpc_target) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_model_metadata("digits", headers=HEADERS).name == "digits"
    with grpc.insecure_channel(live.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == 1
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for key in [(LIVE, "GET", "200"), (READY, "GET", "200"), (METADATA, "GET", "200")]:
        _grew(live, before, key)
    _grew(live, before, (CHECK, "GET", "200"))
    _grew(live, before, (CHECK, "GET", "404"))


def _in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    (value,) = re.findall(r"^convserve_requests_in_flight (\S+)$", text, re.MULTILINE)
    return float(value) - 1  # less the scrape itself


SLOW_SIDE = 4000  # over the default pixel cap: raised for it
BIGS = 6


def _wait_in_flight(url: str, n: int, until: float) -> None:
    while _in_flight(url) < n:
        assert time.monotonic() < until, f"not {n} calls in flight"
        time.sleep(0.01)


def test_a_cancelled_call_is_a_504_with_a_deadline_and_a_499_without() -> None:
    """gRPC clients cancel a call when its deadline passes (the server sees a cancel):
    with a deadline that is the 504 of REST's request timeout; without, the client left.

    Its own server process: the calls wait behind a big decode on the one decode
    thread, which an in-process server would share the test's GIL with."""
    port = free_port()
    env = {"CONVSERVE_GRPC_PORT": str(port), "CONVSERVE_INLINE_DECODE_MAX_PIXELS": "0"}
    big = ("--max-image-pixels", str(SLOW_SIDE**2))
    server = ServerProcess("--decode-threads", "1", *big, env=env).start()
    until = time.monotonic() + 60
    try:
        channel, service = stub(f"127.0.0.1:{port}")
        small = bytes_request([distinct_label_images(1)[0][1]], raw=True)
        with channel:
            slow = bytes_request([slow_jpeg(SLOW_SIDE, seed=1)], raw=True)  # ~0.4 s to decode
            bigs = [service.ModelInfer.future(slow) for _ in range(BIGS)]
            _wait_in_flight(server.url, 1, until)  # the one decode thread is busy with them
            with_deadline = service.ModelInfer.future(small, timeout=60)
            without = service.ModelInfer.future(small)
            # both small calls are in, waiting behind the big ones still running
            while _in_flight(server.url) < 2 + sum(not big.done() for big in bigs):
                assert time.monotonic() < until and not with_deadline.done()
                time.sleep(0.01)
            with_deadline.cancel()
            without.cancel()
            assert all(big.result(timeout=60).outputs for big in bigs)
        counts: dict = {}
        while counts.get((INFER, "POST", "504")) != 1 or counts.get((INFER, "POST", "499")) != 1:
            assert time.monotonic() < until, counts
            counts = _requests(server.url)
            time.sleep(0.05)
        assert counts[(INFER, "POST", "200")] == BIGS
        assert _in_flight(server.url) == 0
    finally:
        server.stop()


def test_shedding_is_a_503_post() -> None:
    """A full queue refuses with UNAVAILABLE; the shedding alert sees it as a 503 POST."""
    cfg = settings(grpc_port=free_port(), **FULL_QUEUE)
    blobs = [data for _, data in distinct_label_images(24)]
    with LiveServer(cfg) as server:
        done = infer_each(server.grpc_target, blobs)
        counts = _requests(server.url)
    assert "StatusCode.UNAVAILABLE" in done, done
    assert counts[(INFER, "POST", "503")] == done.count("StatusCode.UNAVAILABLE")
    assert counts[(INFER, "POST", "200")] == done.count("OK")


def _latency_exclusion() -> re.Pattern[str]:
    """The routes the p99 latency alert leaves out (probes, scrapes), from the rules file."""
    groups = yaml.safe_load(Path(RULES).read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == "ConvserveHighLatencyP99"]
    (regex,) = re.findall(r'route!~"([^"]+)"', rule["expr"])
    return re.compile(regex)


def test_the_alert_rules_select_grpc_inference_and_leave_its_probes_out() -> None:
    exclude = _latency_exclusion()  # PromQL regexes are anchored: fullmatch
    for probe in (LIVE, READY, CHECK, "/readyz", "/v2/health/ready"):
        assert exclude.fullmatch(probe), probe
    for inference in (INFER, "/predict", "/v2/models/{model_name}/infer"):
        assert not exclude.fullmatch(inference), inference
    text = RULES.read_text()
    assert 'method="POST"' in text  # the ratios count POSTs, which ModelInfer is
