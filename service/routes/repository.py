"""Triton's model repository extension over REST: index, load, unload.

`POST /v2/repository/index` lists every version on disk or served with its
state and reason (in every model-control mode); `…/models/{name}/load` and
`…/unload` change what is served, in `explicit` mode only. The bodies are
Triton's, so `tritonclient.http`'s get_model_repository_index, load_model and
unload_model work unchanged. Behind the API key; errors in the `/v2` shape.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.auth import require_api_key
from service.errors import (
    APIError,
    BadRequest,
    DefaultModelUnload,
    InvalidJSON,
    ModelControlOff,
    ModelLoadFailed,
    UnknownModel,
)
from service.lifecycle import (
    ControlDisabled,
    DefaultModelRequired,
    LoadFailed,
    ModelControl,
    NoSuchModel,
    RepositoryError,
)

router = APIRouter(
    prefix="/v2/repository",
    tags=["Model repository (Triton extension)"],
    dependencies=[Depends(require_api_key)],
)

_ERRORS: dict[type[RepositoryError], type[APIError]] = {
    ControlDisabled: ModelControlOff,
    NoSuchModel: UnknownModel,
    LoadFailed: ModelLoadFailed,
    DefaultModelRequired: DefaultModelUnload,
}


def _control(request: Request) -> ModelControl:
    return request.app.state.dataplane.control


async def _body(request: Request) -> dict:
    """The JSON body, {} when empty (tritonclient sends none for the index)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("the request body must be a JSON object")
    return body


def api_error(exc: RepositoryError) -> APIError:
    """The error REST answers a refused repository request with (gRPC maps its status)."""
    return _ERRORS.get(type(exc), BadRequest)(str(exc))


@router.post("/index", summary="Every model version on disk or served, with state and reason")
async def index(request: Request) -> JSONResponse:
    body = await _body(request)
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest("'ready' must be true or false")
    return JSONResponse(_control(request).index.entries(ready_only=ready))


@router.post("/models/{name}/load", summary="Load (or reload) a model from the model directory")
async def load(name: str, request: Request) -> Response:
    parameters = (await _body(request)).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be a JSON object")
    if parameters:
        raise BadRequest(
            f"load parameters {sorted(parameters)} are not supported: convserve loads "
            "the bundle as it is in the model directory (no config or file overrides)"
        )
    try:
        await _control(request).load(name)
    except RepositoryError as exc:
        raise api_error(exc) from None
    return Response(status_code=200)


@router.post("/models/{name}/unload", summary="Stop serving every version of a model")
async def unload(name: str, request: Request) -> Response:
    parameters = (await _body(request)).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be a JSON object")
    # unload_dependents (tritonclient always sends it) means nothing here: no ensembles
    unknown = sorted(set(parameters) - {"unload_dependents"})
    if unknown:
        raise BadRequest(f"unload parameters {unknown} are not supported")
    try:
        await _control(request).unload(name)
    except RepositoryError as exc:
        raise api_error(exc) from None
    return Response(status_code=200)
