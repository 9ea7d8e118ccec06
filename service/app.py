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
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from service.auth import require_api_key
from service.errors import install_error_handlers
from service.fastpath import RawPredictFastPath
from service.inference_thread import InferenceThread
from service.loader import StartupError, build_registry, warm_up
from service.logging import configure_logging
from service.metrics import Metrics, process_stopped
from service.middleware import RequestMiddleware
from service.routes import featuremaps, health, models, predict
from service.settings import Settings

log = logging.getLogger("convserve.app")


def usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset or taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _install_drain_handler(app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
    """Wrap uvicorn's SIGTERM handler: drain first, then let uvicorn shut down."""
    with suppress(ValueError):  # signals only in the main thread (not in in-thread test servers)
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return

        def on_sigterm(sig: int, frame: object) -> None:
            if app.state.draining:  # second signal: stop waiting
                previous(sig, frame)
                return
            app.state.draining = True
            app.state.metrics.ready.set(0)
            loop.call_soon_threadsafe(
                lambda: app.state.tasks.add(loop.create_task(_drain(app, previous, sig)))
            )

        signal.signal(signal.SIGTERM, on_sigterm)


async def _drain(app: FastAPI, previous, sig: int) -> None:
    """Wait for in-flight requests (up to drain_timeout_s), then hand over to uvicorn."""
    settings: Settings = app.state.settings
    log.info(
        "SIGTERM: draining (readiness off; up to %.0f s for %d in-flight requests)",
        settings.drain_timeout_s,
        app.state.in_flight,
    )
    until = time.monotonic() + settings.drain_timeout_s
    while app.state.in_flight > 0 and time.monotonic() < until:
        await asyncio.sleep(0.02)
    for model in app.state.registry.all():
        await model.batcher.drain()
    log.info("drained; %d requests still in flight; shutting down", app.state.in_flight)
    previous(sig, None)


async def _warm(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    try:
        await asyncio.to_thread(warm_up, app.state.registry, settings.max_batch_size)
    except Exception as exc:  # e.g. out of GPU memory for the largest bucket
        app.state.failed = f"warm-up failed: {type(exc).__name__}: {exc}"
        log.exception("%s; staying unready", app.state.failed)
        return
    if not app.state.draining:
        app.state.ready = True
        app.state.metrics.ready.set(1)
        log.info(
            "ready: %s",
            ", ".join(f"{m.name}/{m.version} on {m.provider}" for m in app.state.registry.all()),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    worker = InferenceThread(count=settings.inference_threads)
    # One more decode thread than CPUs: while one waits for the GIL (held by the event
    # loop), the others keep every core decoding (+13% images/s measured on 2 cores).
    pool = ThreadPoolExecutor(
        settings.decode_threads or usable_cpus() + 1, thread_name_prefix="convserve-decode"
    )
    try:
        app.state.registry = build_registry(
            settings, metrics=app.state.metrics, worker=worker, decode_pool=pool
        )
    except Exception as exc:
        log.error("refusing to start: %s", exc)
        worker.close()
        pool.shutdown(wait=False)
        raise StartupError(str(exc)) from None
    loop = asyncio.get_running_loop()
    app.state.tasks.add(loop.create_task(_warm(app)))
    _install_drain_handler(app, loop)
    try:
        yield
    finally:
        app.state.ready = False
        app.state.draining = True
        for model in app.state.registry.all():
            await model.batcher.drain()
        worker.close()
        pool.shutdown(wait=True)
        process_stopped()
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
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.ready = False
    app.state.draining = False
    app.state.failed = None  # why warm-up failed, if it did (then never ready)
    app.state.in_flight = 0
    app.state.tasks = set()
    app.state.filter_pngs = {}
    install_error_handlers(app)
    app.add_middleware(RawPredictFastPath)  # added first: runs inside RequestMiddleware
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        state=app.state,
    )
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(featuremaps.router)
    app.include_router(models.router)
    # --- Open Inference Protocol (v2): included when service/routes/v2.py exists ---
    try:
        from service.routes import v2
    except ModuleNotFoundError as exc:
        if exc.name != "service.routes.v2":
            raise
    else:
        app.include_router(v2.router)
    # --------------------------------------------------------------------------------
    _add_docs(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """/openapi.json and /docs, behind the API key like everything else."""
    guard = [Depends(require_api_key)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="convserve API")
