"""Open Inference Protocol (KServe v2 / Triton) REST endpoints.

The same models, batcher, limits, API key and error handling as `/predict`;
only the wire format differs. Errors raised here are APIErrors, which the app
renders as `{"error": "<message>"}` under `/v2`. The protocol itself (parsing,
shape checks, binary tensors, classification) lives in `service.oip`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.auth import require_api_key
from service.dataplane import DataPlane
from service.errors import APIError, BadRequest, TooLarge, UnsupportedMediaType
from service.json_limits import oip_header_excess
from service.oip.codec import decompress
from service.oip.metadata import model_metadata, server_metadata
from service.oip.protocol import HEADER_LENGTH, ProtocolError
from service.oip.request import InferCall, parse_infer
from service.oip.response import InferResponse, build_infer_response

T = TypeVar("T")

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])
_keyed = [Depends(require_api_key)]

# Parsing or serialising more than this much tensor data moves off the event loop;
# below it the thread hop costs more than the work.
_OFFLOAD_BYTES = 256 * 1024
_BY_STATUS: dict[int, type[APIError]] = {413: TooLarge, 415: UnsupportedMediaType}


def _api_error(exc: ProtocolError) -> APIError:
    return _BY_STATUS.get(exc.status, BadRequest)(exc.message)


async def _protocol(work: Callable[[], T], offload: bool) -> T:
    """Run protocol code, in the thread pool when it is big; its refusals become APIErrors."""
    try:
        return await run_in_threadpool(work) if offload else work()
    except ProtocolError as exc:
        raise _api_error(exc) from None


def _dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


# both spellings: the OIP document writes `/v2/`, Triton's clients ask for `/v2`
@router.get("", summary="Server metadata")
@router.get("/", include_in_schema=False)
async def metadata() -> dict:
    return server_metadata()


@router.get("/health/live", summary="Liveness")
@router.head("/health/live", include_in_schema=False)
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", summary="Readiness: models loaded and warm, not draining")
@router.head("/health/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    is_ready = _dataplane(request).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", dependencies=_keyed, summary="Model metadata")
@router.get("/models/{name}/versions/{version}", dependencies=_keyed, summary="Model metadata")
async def model(request: Request, name: str, version: str | None = None) -> dict:
    served = _dataplane(request).model(name, version)
    versions = [served.version] if version is not None else served.versions
    return model_metadata(served.name, served.bundle, versions)


@router.get("/models/{name}/ready", dependencies=_keyed, summary="Model readiness")
@router.get(
    "/models/{name}/versions/{version}/ready", dependencies=_keyed, summary="Model readiness"
)
async def model_ready(request: Request, name: str, version: str | None = None) -> JSONResponse:
    dataplane = _dataplane(request)
    served = dataplane.model(name, version)
    is_ready = dataplane.model_ready(served.name, served.version)
    return JSONResponse(
        {"name": served.name, "version": served.version, "ready": is_ready},
        status_code=200 if is_ready else 503,
    )


@router.post("/models/{name}/infer", dependencies=_keyed, summary="Inference")
@router.post("/models/{name}/versions/{version}/infer", dependencies=_keyed, summary="Inference")
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    dataplane = _dataplane(request)
    settings = dataplane.settings
    deadline = dataplane.deadline()
    served = dataplane.model(name, version)
    body = await request.body()
    encoding = request.headers.get("content-encoding")
    header_length = request.headers.get(HEADER_LENGTH)

    def parse() -> InferCall:
        raw = decompress(body, encoding, settings.max_body_bytes)
        max_images = settings.max_images_per_request
        if excess := oip_header_excess(raw, header_length, served.bundle.input, max_images):
            raise ProtocolError(413, excess)  # before the parse creates its objects
        return parse_infer(raw, header_length, served.bundle, max_images)

    call = await _protocol(parse, len(body) > _OFFLOAD_BYTES or encoding is not None)
    inputs = call.tensor if call.tensor is not None else call.images
    results = await dataplane.infer(
        served, inputs, [o.name for o in call.outputs], deadline=deadline
    )

    def build() -> InferResponse:
        return build_infer_response(
            model_name=served.name,
            model_version=served.version,
            request_id=call.id,
            outputs=call.outputs,
            results=results,
            labels=served.bundle.classes,
        )

    size = sum(array.nbytes for array in results.values())
    answer = await _protocol(build, size > _OFFLOAD_BYTES)
    return Response(answer.body, headers=answer.headers, media_type=answer.media_type)
