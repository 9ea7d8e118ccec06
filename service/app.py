"""`create_app(settings)`: the FastAPI app, its lifespan, and the graceful drain.

Start-up loads every bundle and creates the onnxruntime sessions before the
server listens (a bad bundle or `providers=cuda` without CUDA refuses to
start); warm-up then runs in the background while /readyz answers 503, and
readiness turns on when every model has run one batch per batch-size bucket.

SIGTERM: /readyz turns 503 and new inference requests get 503 at once, while
queued and in-flight requests complete; then uvicorn's own shutdown runs
(bounded by `drain_timeout_s`). A second SIGTERM/SIGINT exits without waiting.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service import tracing
from service.auth import require_api_key
from service.dataplane import DataPlane
from service.errors import install_error_handlers
from service.fastpath import RawPredictFastPath
from service.grpc.server import start_grpc
from service.loader import StartupError
from service.logging import configure_logging
from service.metrics import Metrics, process_stopped
from service.middleware import RequestMiddleware
from service.openapi_errors import document_errors
from service.routes import docs as docs_routes
from service.routes import (
    explain,
    explain_v1,
    featuremaps,
    health,
    models,
    page,
    pictures,
    predict,
    repository,
    v1,
)
from service.settings import Settings

log = logging.getLogger("convserve.app")
GRPC_GRACE_S = 5.0  # at shutdown, for gRPC calls still running
# FastAPI >= 0.16x instruments every request itself once OpenTelemetry is importable,
# asking three global providers per request whether it should (~80 us at concurrency 1,
# py-spy); convserve's own spans (service/tracing.py) are the documented ones.
_NO_NATIVE_TELEMETRY = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def _install_drain_handler(dataplane: DataPlane, loop: asyncio.AbstractEventLoop) -> None:
    """Wrap uvicorn's SIGTERM handler: drain first, then let uvicorn shut down."""
    with suppress(ValueError):  # signals only in the main thread (not in in-thread test servers)
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return

        def on_sigterm(sig: int, frame: object) -> None:
            if not dataplane.state.to_draining():  # second signal: stop waiting
                previous(sig, frame)
                return
            loop.call_soon_threadsafe(lambda: dataplane.spawn(_drain(dataplane, previous, sig)))

        signal.signal(signal.SIGTERM, on_sigterm)


async def _drain(dataplane: DataPlane, previous, sig: int) -> None:
    """Wait for in-flight requests (up to drain_timeout_s), then hand over to uvicorn."""
    timeout_s = dataplane.settings.drain_timeout_s
    log.info(
        "SIGTERM: draining (readiness off; up to %.0f s for %d in-flight requests)",
        timeout_s,
        dataplane.state.in_flight,
    )
    await dataplane.drain(timeout_s)
    log.info("drained; %d requests still in flight; shutting down", dataplane.state.in_flight)
    previous(sig, None)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dataplane: DataPlane = app.state.dataplane
    try:  # before the models load: their batchers take the tracer
        tracing.configure(app.state.settings.tracing)
    except tracing.TracingUnavailable as exc:
        log.error("refusing to start: %s", exc)
        raise StartupError(str(exc)) from None
    await dataplane.start()  # StartupError: the server refuses to start
    try:  # gRPC on this same loop, over the same data plane (None when grpc_port is 0)
        app.state.grpc = await start_grpc(dataplane, app.state.settings)
    except StartupError:
        await dataplane.stop()
        raise
    _install_drain_handler(dataplane, asyncio.get_running_loop())
    try:
        yield
    finally:
        if app.state.grpc is not None:  # in-flight calls were drained with the HTTP ones
            await app.state.grpc.stop(min(dataplane.settings.drain_timeout_s, GRPC_GRACE_S))
        await dataplane.stop()
        process_stopped()
        tracing.shutdown()  # exports the spans still buffered
        log.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = FastAPI(
        title="convserve",
        summary="Image classification with a Keras-trained CNN, served by onnxruntime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    # the one mutable object: models, lifecycle state, admission, decoding, inference
    app.state.dataplane = DataPlane(settings, app.state.metrics)
    install_error_handlers(app)
    document_errors(app)  # /openapi.json lists the error answers, in their real shape
    app.add_middleware(RawPredictFastPath)  # added first: runs inside RequestMiddleware
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        state=app.state.dataplane.state,
        max_buffered_bytes=settings.max_inflight_body_bytes,
    )
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(featuremaps.router)
    app.include_router(models.router)
    app.include_router(explain.router)
    app.include_router(explain_v1.router)  # before v1: its /models/{target} takes any verb
    app.include_router(pictures.router)
    app.include_router(page.router)
    app.include_router(v1.router)  # TensorFlow Serving / KServe V1
    # --- Open Inference Protocol (v2): included when service/routes/v2.py exists ---
    try:
        from service.routes import v2
    except ModuleNotFoundError as exc:
        if exc.name != "service.routes.v2":
            raise
    else:
        app.include_router(v2.router)
        app.include_router(repository.router)  # Triton's model repository extension
    # --------------------------------------------------------------------------------
    _add_docs(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """/openapi.json and /docs (service/routes/docs.py: offline), behind the API key."""
    guard = [Depends(require_api_key)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    app.include_router(docs_routes.router)
