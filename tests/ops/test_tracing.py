"""OpenTelemetry spans over real HTTP: the SDK's in-memory exporter behind a real server.

The exporter is swapped in where the OTLP one would be made, so everything else
(provider, batch processor, propagation, the hooks) runs as in production; one
test also exports over real OTLP/HTTP to a receiver on loopback.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from service import tracing
from service.logging import JSONFormatter
from tests.service.grpc_support import bytes_request, stub
from tests.service.serving import DIGITS, LiveServer, ServerProcess, free_port, settings

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from service import tracing_otel
except ImportError as exc:  # the otel extra is not installed
    message = f"OpenTelemetry is not installed ({exc}); `make test` installs the otel extra"
    if os.environ.get("CI"):
        raise RuntimeError(message) from None
    pytest.skip(message, allow_module_level=True)

SEVEN = (DIGITS.parents[2] / "tests" / "data" / "seven.png").read_bytes()
PNG = {"Content-Type": "image/png"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Traced:
    """A live server with tracing on, its exported spans and its JSON access lines."""

    def __init__(self, live: LiveServer, exporter: InMemorySpanExporter, log: io.StringIO):
        self.live, self.exporter, self.log = live, exporter, log

    def spans(self, requests: int = 0) -> list[ReadableSpan]:
        """The finished spans, once `requests` server spans are among them: a request's span
        ends after its response went out, so the client may see the answer first."""
        deadline = time.monotonic() + 10
        while True:
            assert tracing._impl is not None
            tracing._impl.provider.force_flush()
            spans = list(self.exporter.get_finished_spans())
            servers = sum(s.kind == SpanKind.SERVER for s in spans)
            if servers >= requests or time.monotonic() > deadline:
                return spans
            time.sleep(0.01)

    def access_line(self, path: str) -> dict:
        """The one JSON access line for `path` (written just before the request span ends)."""
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(x) for x in self.log.getvalue().splitlines() if x]
            found = [line for line in lines if line["path"] == path]
            if found or time.monotonic() > deadline:
                (line,) = found
                return line
            time.sleep(0.01)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing_otel, "_otlp_exporter", lambda: exporter)
    cfg = settings(tracing="on", log_level="info", max_batch_delay_ms=50, grpc_port=free_port())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    access = logging.getLogger("convserve.access")
    with LiveServer(cfg) as live:
        access.addHandler(handler)
        try:
            with httpx.Client(timeout=10) as c:  # probes and /metrics are not traced
                for path in ("/healthz", "/readyz", "/metrics"):
                    assert c.get(live.url + path).status_code == 200
            traced = Traced(live, exporter, stream)
            assert traced.spans() == []
            yield traced
        finally:
            access.removeHandler(handler)
    assert not tracing.enabled  # the server's shutdown turned it off


def _by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _post(url: str, traceparent: str | None = None) -> httpx.Response:
    headers = dict(PNG)
    if traceparent:
        headers["traceparent"] = traceparent
    with httpx.Client(timeout=30) as c:
        return c.post(url + "/predict", content=SEVEN, headers=headers)


def test_a_request_joins_the_callers_trace_with_its_children(traced: Traced) -> None:
    r = _post(traced.live.url, f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert r.status_code == 200
    spans = traced.spans(requests=1)
    (request,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert request.name == "POST /predict"
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert f"{request.parent.span_id:016x}" == PARENT_ID and request.parent.is_remote
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["http.route"] == "/predict"
    assert request.attributes["convserve.request_id"] == r.headers["x-request-id"]
    for name in ("decode", "queue wait"):
        (child,) = _by_name(spans, name)
        assert child.parent.span_id == request.context.span_id, name
        assert child.context.trace_id == request.context.trace_id
        assert child.attributes["convserve.model"] == "digits"
        assert child.attributes["convserve.model_version"] == "1"
        assert child.attributes["convserve.image_count"] == 1
        assert request.start_time <= child.start_time <= child.end_time <= request.end_time
    (batch,) = _by_name(spans, "inference batch")
    assert batch.parent is None  # a trace of its own, linked both ways
    assert [link.context.span_id for link in batch.links] == [request.context.span_id]
    assert [link.context.span_id for link in request.links] == [batch.context.span_id]
    assert batch.attributes["convserve.batch_size"] == 1
    assert batch.attributes["convserve.request_count"] == 1
    assert batch.attributes["convserve.provider"] == "CPUExecutionProvider"
    assert batch.attributes["convserve.model"] == "digits"
    # the access log line names the trace and the request's span
    line = traced.access_line("/predict")
    assert line["trace_id"] == TRACE_ID
    assert line["span_id"] == f"{request.context.span_id:016x}"


def test_one_batch_span_links_every_request_it_served(traced: Traced) -> None:
    for _ in range(10):  # concurrent requests are batched together; retry if they were not
        traced.exporter.clear()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _post(traced.live.url), range(8)))
        assert {r.status_code for r in answers} == {200}
        spans = traced.spans(requests=8)
        batches = _by_name(spans, "inference batch")
        if any(len(b.links) >= 2 for b in batches):
            break
    else:
        pytest.fail("8 concurrent requests never shared a batch")
    requests = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(requests) == 8
    assert len({s.context.trace_id for s in requests}) == 8  # no traceparent: a trace each
    assert sum(b.attributes["convserve.batch_size"] for b in batches) == 8
    batch_of = {b.context.span_id: b for b in batches}
    for request in requests:
        (link,) = request.links
        batch = batch_of[link.context.span_id]
        assert request.context.span_id in {lk.context.span_id for lk in batch.links}
    for batch in batches:
        assert batch.attributes["convserve.request_count"] == len(batch.links)


def test_a_grpc_call_joins_the_callers_trace_too(traced: Traced) -> None:
    channel, grpc_stub = stub(traced.live.grpc_target)
    with channel:
        metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
        grpc_stub.ModelInfer(bytes_request([SEVEN], raw=True), metadata=metadata, timeout=30)
    spans = traced.spans(requests=1)
    (call,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert call.name == "inference.GRPCInferenceService/ModelInfer"
    assert f"{call.context.trace_id:032x}" == TRACE_ID
    assert f"{call.parent.span_id:016x}" == PARENT_ID
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert [s.parent.span_id for s in _by_name(spans, "decode")] == [call.context.span_id]
    (batch,) = _by_name(spans, "inference batch")
    assert [link.context.span_id for link in batch.links] == [call.context.span_id]


def test_an_unsampled_caller_gets_no_spans_but_its_trace_id_in_the_log(traced: Traced) -> None:
    assert _post(traced.live.url, f"00-{TRACE_ID}-{PARENT_ID}-00").status_code == 200
    assert traced.spans() == []  # parent-based sampling: not even a batch span
    line = traced.access_line("/predict")
    assert line["trace_id"] == TRACE_ID


def test_a_client_error_is_recorded_but_not_as_a_span_error(traced: Traced) -> None:
    with httpx.Client(timeout=30) as c:
        bad = c.post(traced.live.url + "/predict", content=b"not a png", headers=PNG)
    assert bad.status_code == 400
    (request,) = [s for s in traced.spans(requests=1) if s.kind == SpanKind.SERVER]
    assert request.attributes["http.response.status_code"] == 400
    assert request.status.status_code.name == "UNSET"  # a client error is not the server's


def test_off_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing_otel, "_otlp_exporter", lambda: exporter)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    access = logging.getLogger("convserve.access")
    with LiveServer(settings(tracing="off", log_level="info")) as live:
        access.addHandler(handler)
        try:
            assert not tracing.enabled
            assert _post(live.url, f"00-{TRACE_ID}-{PARENT_ID}-01").status_code == 200
        finally:
            access.removeHandler(handler)
    assert exporter.get_finished_spans() == ()
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if '"/predict"' in x]
    assert "trace_id" not in line


def test_auto_follows_the_otlp_endpoint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert not tracing.wanted("auto") and tracing.wanted("on") and not tracing.wanted("off")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert tracing.wanted("auto") and not tracing.wanted("off")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.wanted("auto")


# ---- processes: real OTLP export, and the server without the extra ----------------


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each decoded ExportTraceServiceRequest."""

    received: list = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.received.append((self.path, message))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_endpoint_named_by_the_standard_variables() -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
        "OTEL_SERVICE_NAME": "convserve-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "CONVSERVE_PROVIDERS": "cpu",
    }
    server = ServerProcess("--log-format", "json", env=env)  # tracing=auto: on by the endpoint
    try:
        server.start(timeout=60)
        assert _post(server.url, f"00-{TRACE_ID}-{PARENT_ID}-01").status_code == 200
        deadline = time.monotonic() + 20
        names: set[str] = set()
        while time.monotonic() < deadline and "inference batch" not in names:
            time.sleep(0.1)
            for path, message in list(_Receiver.received):
                assert path == "/v1/traces"
                for resource_spans in message.resource_spans:
                    service = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }["service.name"]
                    assert service == "convserve-under-test"
                    for scope_spans in resource_spans.scope_spans:
                        names |= {s.name for s in scope_spans.spans}
        assert {"POST /predict", "decode", "queue wait", "inference batch"} <= names
        access = [json.loads(x) for x in server.lines if x.startswith("{") and "/predict" in x]
        assert access and access[0]["trace_id"] == TRACE_ID
    finally:
        server.stop()
        receiver.shutdown()
        receiver.server_close()


def _without_opentelemetry(tmp_path: Path) -> str:
    """A PYTHONPATH entry whose sitecustomize hides what the otel extra installs (the SDK and
    the exporters; opentelemetry-api itself is a dependency of FastAPI)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoOtel:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')):\n"
        "            raise ImportError(f'No module named {name!r} (hidden by the test)')\n"
        "sys.meta_path.insert(0, _NoOtel())\n"
    )
    return str(tmp_path)


def test_the_server_runs_without_the_extra_and_refuses_only_tracing_on(tmp_path: Path) -> None:
    root = str(DIGITS.parents[2])
    hidden = {"PYTHONPATH": f"{_without_opentelemetry(tmp_path)}:{root}"}
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    server = ServerProcess(env={**hidden, **endpoint, "CONVSERVE_PROVIDERS": "cpu"})
    try:
        server.start(timeout=60)  # auto + an endpoint: a warning, and it serves
        assert _post(server.url).status_code == 200
        assert "tracing needs the otel extra" in server.output
        assert "hidden by the test" in server.output
    finally:
        server.stop()
    refused = ServerProcess(env={**hidden, "CONVSERVE_TRACING": "on"})
    try:
        assert refused.proc.wait(60) != 0
        time.sleep(0.2)  # the last lines through the pipe
        assert "refusing to start: tracing needs the otel extra" in refused.output
    finally:
        refused.stop()
