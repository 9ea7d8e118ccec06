"""The OpenTelemetry side of service.tracing; imported only when tracing is on.

Spans: the request (server kind; parent: the caller's traceparent), `decode`,
`queue wait` (enqueue to the start of its batch, made when the batch starts)
and `inference batch`. A batch serves many requests, so its span starts a trace
of its own and links to every request span it served, and each request span
links back to it. The provider is private to convserve (not the global one),
configured from the standard OTEL_* variables: resource, sampler, batch
processor, and the OTLP exporter's endpoint, headers and protocol.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from service import __version__


class _ASGIHeaders(Getter):
    """Reads the W3C headers straight from an ASGI scope's (bytes, bytes) list."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_GETTER = _ASGIHeaders()
_OFF = nullcontext()
# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS: the
# server's failures (OpenTelemetry's gRPC conventions); the rest are the caller's
_GRPC_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}


def _otlp_exporter() -> SpanExporter:
    """The OTLP exporter the environment asks for (http/protobuf unless it says grpc)."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTLP protocol {protocol!r}: use http/protobuf or grpc")
    return OTLPSpanExporter()


class Tracing:
    """One TracerProvider for this process and the hooks' implementations."""

    def __init__(self, exporter: SpanExporter | None = None) -> None:
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES override these defaults
        ours = Resource.create({"service.name": "convserve", "service.version": __version__})
        self.provider = TracerProvider(resource=ours.merge(OTELResourceDetector().detect()))
        if exporter is None:
            self._exporter_name = "otlp"
            self.provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            self._exporter_name = type(exporter).__name__
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("convserve", __version__)

    def describe(self) -> str:
        service = self.provider.resource.attributes.get("service.name")
        return f"service.name={service}, exporter={self._exporter_name}"

    def shutdown(self) -> None:
        self.provider.shutdown()

    # ---- request ---------------------------------------------------------------
    def start_request(self, scope: dict, request_id: str) -> tuple[trace.Span, object]:
        parent = propagate.extract(scope["headers"], getter=_GETTER)
        method = scope["method"]
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "convserve.request_id": request_id,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end_request(self, handle: tuple[trace.Span, object], status: int, route: str) -> None:
        span, token = handle
        try:
            if span.is_recording():
                span.update_name(f"{span.name} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        finally:
            otel_context.detach(token)

    # ---- gRPC call ---------------------------------------------------------------
    def start_rpc(self, metadata, service: str, method: str) -> tuple[trace.Span, object]:
        carrier = {key.lower(): value for key, value in metadata or () if isinstance(value, str)}
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(
            f"{service}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    def end_rpc(self, handle: tuple[trace.Span, object], code: int) -> None:
        span, token = handle
        try:
            span.set_attribute("rpc.grpc.status_code", code)
            if code in _GRPC_SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        finally:
            otel_context.detach(token)

    # ---- children -----------------------------------------------------------------
    def span(self, name: str, attributes: dict[str, object]):
        """A child of the current span; nothing at all under an unsampled (or no) request."""
        if not trace.get_current_span().is_recording():
            return _OFF
        return self.tracer.start_as_current_span(name, attributes=_named(attributes))

    def current_span(self) -> trace.Span | None:
        """The current span when it records: an unsampled request gets no child spans."""
        span = trace.get_current_span()
        return span if span.is_recording() else None

    def batch_tracer(self, model: str, version: str, provider: str) -> BatchTracer:
        return BatchTracer(self.tracer, model, version, provider)

    def log_ids(self) -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _named(attributes: dict[str, object]) -> dict[str, object]:
    """Keyword names to attribute names: model -> convserve.model, and so on."""
    return {_ATTRIBUTE_NAMES.get(k, f"convserve.{k}"): v for k, v in attributes.items()}


_ATTRIBUTE_NAMES = {"version": "convserve.model_version", "images": "convserve.image_count"}


class BatchTracer:
    """The batcher's spans for one model version (queue wait, the onnxruntime batch)."""

    def __init__(self, tracer: trace.Tracer, model: str, version: str, provider: str) -> None:
        self._tracer = tracer
        self._attributes = {
            "convserve.model": model,
            "convserve.model_version": version,
            "convserve.provider": provider,
        }

    def queue_waited(self, request: trace.Span, rows: int, waited_s: float) -> None:
        """A `queue wait` child of `request` that ended now, after `waited_s` seconds."""
        if not request.is_recording():
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            "queue wait",
            context=trace.set_span_in_context(request),
            start_time=end - int(waited_s * 1e9),
            attributes={**self._attributes, "convserve.image_count": rows},
        )
        span.end(end_time=end)

    @contextmanager
    def batch(
        self, requests: Sequence[trace.Span | None], rows: int, padded: int
    ) -> Iterator[None]:
        """The `inference batch` span around one onnxruntime call (runs in its thread)."""
        served = [r for r in requests if r is not None and r.get_span_context().trace_flags.sampled]
        if not served:  # no sampled request in this batch: no batch span either
            yield
            return
        span = self._tracer.start_span(
            "inference batch",
            context=otel_context.Context(),  # a root: it belongs to no single request
            links=[Link(r.get_span_context()) for r in served],
            attributes={
                **self._attributes,
                "convserve.batch_size": rows,
                "convserve.padded_size": padded,
                "convserve.request_count": len(served),
            },
        )
        try:
            yield
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()
            for request in served:
                if request.is_recording():
                    request.add_link(span.get_span_context())
