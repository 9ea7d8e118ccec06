"""POST /featuremaps and GET /models/{name}/filters/{layer}.png: what the CNN sees.

Feature maps go through the same decode pool and dynamic batcher as /predict
(one onnxruntime call gives the layer's activations); PNG encoding runs in the
decode pool too, never on the event loop. Filter pictures are drawn once per
model version and layer, then served from memory.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.auth import require_api_key
from service.errors import InvalidParameter, NoFilters, UnknownLayer
from service.models import ServedModel
from service.routes.inputs import read_images
from service.routes.predict import IMAGE_BODY, MODEL_PARAMS, query_param
from service.visualize import feature_map_png, filters_png

router = APIRouter(dependencies=[Depends(require_api_key)])


def _layer(model: ServedModel, name: str | None) -> str:
    if not name:
        raise InvalidParameter(
            f"the `layer` query parameter is required; layers: {', '.join(model.layers)}",
        )
    if name not in model.layers:
        raise UnknownLayer(model.unknown_layer_message(name))
    return name


@router.post(
    "/featuremaps",
    summary="The activations of one layer for one image, as a PNG grid or JSON",
    openapi_extra={
        "parameters": [
            query_param("layer", "feature-map layer name (see /models/{name})", {"type": "string"}),
            query_param(
                "format", "png (default) or json", {"type": "string", "enum": ["png", "json"]}
            ),
            *MODEL_PARAMS,
        ],
        "requestBody": IMAGE_BODY,
    },
)
async def featuremaps(request: Request) -> Response:
    state = request.app.state
    deadline = time.monotonic() + state.settings.request_timeout_s
    query = request.query_params
    model = state.registry.resolve(query.get("model"), query.get("version"))
    layer = _layer(model, query.get("layer"))
    fmt = query.get("format", "png")
    if fmt not in ("png", "json"):
        raise InvalidParameter(f"format must be png or json, not {fmt!r}")
    blobs, names = await read_images(request, state.settings.max_images_per_request)
    if len(blobs) != 1:
        raise InvalidParameter(f"/featuremaps takes exactly one image, not {len(blobs)}")
    batch = await model.decode(blobs, names)
    activation = (await model.infer(batch, (layer,), deadline=deadline))[layer][0]
    if fmt == "png":
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(model.decode_pool, feature_map_png, activation)
        return Response(png, media_type="image/png")
    spec = model.layers[layer]
    doc = {
        "model": {"name": model.name, "version": model.version},
        "filename": names[0],
        "layer": layer,
        "kind": spec.kind,
        "shape": list(activation.shape),
        "values": activation.tolist(),
    }
    return Response(json.dumps(doc, separators=(",", ":")).encode(), media_type="application/json")


@router.get(
    "/models/{name}/filters/{layer}.png",
    summary="A Conv2D layer's kernels as a PNG grid (rows: output filters, columns: inputs)",
    response_class=Response,
    openapi_extra={"parameters": [MODEL_PARAMS[1]]},
)
async def filters(name: str, layer: str, request: Request) -> Response:
    model = request.app.state.registry.resolve(name, request.query_params.get("version"))
    if layer not in model.layers:
        raise UnknownLayer(model.unknown_layer_message(layer))
    cache: dict = request.app.state.filter_pngs
    key = (model.name, model.version, layer)
    png = cache.get(key)
    if png is None:
        kernel = model.filters.get(layer)
        if kernel is None:
            kind = model.layers[layer].kind
            raise NoFilters(f"layer {layer!r} ({kind}) has no filters in filters.npz")
        png = cache[key] = await asyncio.to_thread(filters_png, kernel)
    return Response(png, media_type="image/png")
