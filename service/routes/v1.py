"""TensorFlow Serving / KServe V1 REST: model status, metadata and `:predict`.

A thin adapter: the wire format is `service.v1`, everything else (models,
admission, deadlines, decoding, batching, errors) is the data plane's. Errors
under `/v1` render as TF Serving's `{"error": "<message>"}`.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.auth import require_api_key
from service.bundle import PROBABILITIES_OUTPUT
from service.dataplane import DataPlane
from service.errors import NotFound, register_shape
from service.v1.request import PredictCall, parse_predict
from service.v1.response import model_metadata, model_status, predictions_json

PREFIX = "/v1"
router = APIRouter(prefix=PREFIX, tags=["TensorFlow Serving / KServe V1"])
register_shape(PREFIX, lambda code, message: json.dumps({"error": message}).encode())
_keyed = [Depends(require_api_key)]
_OFFLOAD_BYTES = 256 * 1024  # JSON bodies above this are parsed off the event loop


def _dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


@router.get("/models", dependencies=_keyed, summary="Model names (KServe V1)")
async def models(request: Request) -> dict:
    return {"models": _dataplane(request).registry.names()}


@router.get("/models/{name}", dependencies=_keyed, summary="Model status, every version")
@router.get("/models/{name}/versions/{version}", dependencies=_keyed, summary="Model status")
async def status(request: Request, name: str, version: str | None = None) -> JSONResponse:
    dp = _dataplane(request)
    served = dp.model(name, version)
    versions = [served.version] if version is not None else served.versions
    ready = dp.ready()
    doc = model_status(served.name, versions, ready, dp.state.draining)
    return JSONResponse(doc, status_code=200 if ready else 503)


@router.get("/models/{name}/metadata", dependencies=_keyed, summary="Signature (serving_default)")
@router.get("/models/{name}/versions/{version}/metadata", dependencies=_keyed, summary="Signature")
async def metadata(request: Request, name: str, version: str | None = None) -> dict:
    served = _dataplane(request).model(name, version)
    return model_metadata(served.name, served.version, served.bundle)


def _verb(target: str) -> tuple[str, str]:
    """`digits:predict` -> ("digits", "predict"); :explain has its own routes (explain_v1)."""
    name, colon, verb = target.rpartition(":")
    if not colon or verb != "predict":
        raise NotFound(
            f"no such endpoint: POST {PREFIX}/models/{target}; "
            f"this server answers POST {PREFIX}/models/<name>[/versions/<v>]:predict "
            "and :explain"
        )
    return name, verb


@router.post("/models/{target}", dependencies=_keyed, summary="Predict (`<name>:predict`)")
async def predict_latest(request: Request, target: str) -> Response:
    name, _ = _verb(target)
    return await _predict(request, name, None)


@router.post(
    "/models/{name}/versions/{target}", dependencies=_keyed, summary="Predict (`<v>:predict`)"
)
async def predict_version(request: Request, name: str, target: str) -> Response:
    version, _ = _verb(target)
    return await _predict(request, name, version)


async def _predict(request: Request, name: str, version: str | None) -> Response:
    dp = _dataplane(request)
    deadline = dp.deadline()
    served = dp.model(name, version)
    body = await request.body()
    limit = dp.settings.max_images_per_request
    if len(body) > _OFFLOAD_BYTES:
        call: PredictCall = await dp.offload(parse_predict, body, served.bundle, limit)
    else:
        call = parse_predict(body, served.bundle, limit)
    inputs = call.images if call.images is not None else call.tensor
    out = await dp.infer(served, inputs, (PROBABILITIES_OUTPUT,), deadline=deadline)
    body = predictions_json(out[PROBABILITIES_OUTPUT], call.columnar)
    return Response(body, media_type="application/json")
