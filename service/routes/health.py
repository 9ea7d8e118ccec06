"""Probes and metrics: never behind the API key (probes and scrapers carry no secrets)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.errors import render

router = APIRouter()
_OK = b'{"status":"ok"}'
_READY = b'{"status":"ready"}'


# HEAD too (load balancers and uptime checkers probe with it), kept out of the schema
@router.get("/healthz", summary="Liveness: the process and its event loop answer")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get("/readyz", summary="Readiness: models loaded and warmed up, not draining")
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    refusal = request.app.state.dataplane.state.refusal()
    if refusal is None:
        return Response(_READY, media_type="application/json")
    return render(request.url.path, refusal)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {}}}},
    response_class=Response,
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
