"""The graceful drain over gRPC: `python -m service` in a subprocess gets SIGTERM.

gRPC calls in flight when SIGTERM arrives finish OK; calls that arrive during
the drain get UNAVAILABLE (counted as a 503 POST, as REST's refusal is);
grpc.health.v1 says NOT_SERVING, to Check and to an open Watch stream; the
process exits cleanly once the calls are answered.
"""

from __future__ import annotations

import re
import time

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.service.drain_support import held_upload
from tests.service.grpc_support import bytes_request, stub
from tests.service.hardening_support import slow_jpeg
from tests.service.serving import ServerProcess, distinct_label_images, free_port

SLOW_SIDE = 4000  # ~0.4 s to decode (62 scans), over the default pixel cap: raised
BIGS = 4  # slow uploads queued on the one decode thread, so some are in flight at SIGTERM
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INFER = 'route="/inference.GRPCInferenceService/ModelInfer"'


def _scrape(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def _count(text: str, status: str) -> float:
    pattern = (
        rf"^convserve_requests_total\{{(?=[^}}]*{re.escape(INFER)})"
        rf"(?=[^}}]*status=\"{status}\")[^}}]*\}} (\S+)$"
    )
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _in_flight(text: str) -> float:
    (value,) = re.findall(r"^convserve_requests_in_flight (\S+)$", text, re.MULTILINE)
    return float(value) - 1  # less the scrape itself


def test_sigterm_finishes_grpc_calls_in_flight_and_refuses_new_ones() -> None:
    port = free_port()
    env = {"CONVSERVE_GRPC_PORT": str(port), "CONVSERVE_INLINE_DECODE_MAX_PIXELS": "0"}
    args = ("--decode-threads", "1", "--drain-timeout-s", "30")
    server = ServerProcess(*args, "--max-image-pixels", str(SLOW_SIDE**2), env=env).start()
    (label, png), *_ = distinct_label_images(1)
    until = time.monotonic() + 60
    try:
        channel, service = stub(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == SERVING
        with held_upload(server.url, png) as finish_upload:
            while _in_flight(_scrape(server.url)) < 1:  # the held upload
                assert time.monotonic() < until
                time.sleep(0.01)
            slow = bytes_request([slow_jpeg(SLOW_SIDE, seed=3)], raw=True)
            bigs = [service.ModelInfer.future(slow) for _ in range(BIGS)]
            while True:  # every big call is in the server (running or done), some still running
                text = _scrape(server.url)
                running, finished = _in_flight(text) - 1, _count(text, "200")
                if running >= 1 and running + finished >= BIGS:
                    break
                assert finished < BIGS, "all calls finished before SIGTERM: nothing to drain"
                assert time.monotonic() < until, "the calls did not arrive"
                time.sleep(0.01)

            server.terminate()
            while health.Check(health_pb2.HealthCheckRequest()).status != NOT_SERVING:
                assert time.monotonic() < until, "health did not turn NOT_SERVING"
                time.sleep(0.01)
            assert next(watch).status == NOT_SERVING
            small = bytes_request([png], raw=True)
            try:
                service.ModelInfer(small, timeout=10)
                raise AssertionError("a call during the drain was served")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                assert "shutting down" in exc.details()
            # the refusal is a shed inference request for the alert rules
            assert _count(_scrape(server.url), "503") == 1
            statuses = [big.exception(timeout=60) for big in bigs]
            assert statuses == [None] * BIGS, statuses  # every admitted call answered OK
            answer = finish_upload()  # the drain ends with the last request in flight
        assert answer.startswith(b"HTTP/1.1 200") and f'"label":"{label}"'.encode() in answer
        started = time.monotonic()
        rc = server.proc.wait(40)
        stopped_in = time.monotonic() - started
        channel.close()
    finally:
        server.stop()
    assert rc in (0, -15), server.output
    assert "SIGTERM: draining" in server.output
    assert stopped_in < 3, f"{stopped_in:.1f} s from the last answer to the exit"
