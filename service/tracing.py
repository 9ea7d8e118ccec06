"""OpenTelemetry tracing: optional (the `otel` extra), off unless configured, free when off.

The request path calls the hooks below only after checking `tracing.enabled`
(one module attribute read); nothing here imports OpenTelemetry unless tracing
is turned on, so the core runs without the extra. The spans themselves are made
in `service.tracing_otel`. `CONVSERVE_TRACING`:

- `auto` (default): on when an OTLP endpoint is configured
  (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
  OTEL_SDK_DISABLED is not true; if the extra is missing, a warning and off;
- `on`: always (refuses to start without the extra); `off`: never.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.tracing_otel import BatchTracer, Tracing

log = logging.getLogger("convserve.tracing")

enabled = False  # read by every hook's caller before it calls in
_impl: Tracing | None = None
OFF = nullcontext()  # what `span` gives when tracing is off: a reusable no-op
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class TracingUnavailable(RuntimeError):
    """CONVSERVE_TRACING=on without the `otel` extra installed."""


def wanted(mode: str) -> bool:
    """Whether `mode` (auto, on, off) turns tracing on in this environment."""
    if mode == "auto":
        disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        return not disabled and any(os.environ.get(name) for name in _ENDPOINTS)
    return mode == "on"


def configure(mode: str, *, exporter: Any = None) -> None:
    """Turn tracing on or off for this process (each worker configures its own).

    `exporter`: a span exporter to use instead of OTLP (tests pass the SDK's
    in-memory exporter; spans are then exported as each one ends).
    """
    global enabled, _impl
    if _impl is not None:  # a second app in the same process (tests): start afresh
        _impl.shutdown()
        enabled, _impl = False, None
    if not wanted(mode) and exporter is None:
        return
    try:
        from service.tracing_otel import Tracing
    except ImportError as exc:
        message = f"tracing needs the otel extra (pip install 'convserve[otel]'): {exc}"
        if mode == "on":
            raise TracingUnavailable(message) from None
        log.warning("%s; tracing stays off", message)
        return
    _impl = Tracing(exporter)
    enabled = True
    log.info("tracing on: %s", _impl.describe())


def shutdown() -> None:
    """Export what is buffered and turn tracing off."""
    configure("off")


# ---- hooks: call only when `enabled` ------------------------------------------


def start_request(scope: dict, request_id: str) -> object | None:
    """Open the request's server span (joining an incoming traceparent) and make it current;
    None for the probes and /metrics, which a cluster calls every few seconds."""
    assert _impl is not None
    if scope["path"] in UNTRACED:
        return None
    return _impl.start_request(scope, request_id)


def end_request(handle: object, status: int, route: str) -> None:
    """Close the request span with its route and status; restore the previous context."""
    assert _impl is not None
    _impl.end_request(handle, status, route)


def start_rpc(metadata: object, service: str, method: str) -> object:
    """The gRPC twin of `start_request`: a server span joining the metadata's traceparent."""
    assert _impl is not None
    return _impl.start_rpc(metadata, service, method)


def end_rpc(handle: object, code: int) -> None:
    """Close the call's span with its gRPC status code (0 is OK)."""
    assert _impl is not None
    _impl.end_rpc(handle, code)


def span(name: str, **attributes: object):
    """A child span of the current one for the `with` block (decoding); a no-op when off."""
    if _impl is None:
        return OFF
    return _impl.span(name, attributes)


def current_span() -> object | None:
    """The current span (the request's), to hand to the batcher with the rows."""
    return _impl.current_span() if _impl is not None else None


def batch_tracer(model: str, version: str, provider: str) -> BatchTracer | None:
    """Queue-wait and batch spans for one model version's batcher; None when off."""
    return _impl.batch_tracer(model, version, provider) if _impl is not None else None


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for the JSON log line."""
    return _impl.log_ids() if _impl is not None else None
