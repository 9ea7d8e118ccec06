"""POST /featuremaps and GET /models/{name}/filters/{layer}.png: what the CNN sees.

Feature maps go through the same decode pool and dynamic batcher as /predict
(one onnxruntime call gives the layer's activations); PNG encoding runs in the
decode pool too, never on the event loop. Filter pictures are drawn once per
model version and layer, then served from memory.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.auth import require_api_key
from service.dataplane import DataPlane
from service.errors import InvalidParameter
from service.models import ServedModel
from service.routes.inputs import read_images
from service.routes.predict import IMAGE_BODY, MODEL_PARAMS, query_param
from service.visualize import feature_map_png

router = APIRouter(dependencies=[Depends(require_api_key)])


def _layer_param(model: ServedModel, name: str | None) -> str:
    if not name:
        raise InvalidParameter(
            f"the `layer` query parameter is required; layers: {', '.join(model.layers)}"
        )
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
    dataplane: DataPlane = request.app.state.dataplane
    deadline = dataplane.deadline()
    query = request.query_params
    model = dataplane.model(query.get("model"), query.get("version"))
    spec = dataplane.layer(model, _layer_param(model, query.get("layer")))
    fmt = query.get("format", "png")
    if fmt not in ("png", "json"):
        raise InvalidParameter(f"format must be png or json, not {fmt!r}")
    blobs, names = await read_images(request, dataplane.settings.max_images_per_request)
    if len(blobs) != 1:
        raise InvalidParameter(f"/featuremaps takes exactly one image, not {len(blobs)}")
    activation = await dataplane.feature_map(
        model, spec.name, blobs[0], name=names[0], deadline=deadline
    )
    if fmt == "png":
        return Response(
            await dataplane.offload(feature_map_png, activation), media_type="image/png"
        )
    doc = {
        "model": {"name": model.name, "version": model.version},
        "filename": names[0],
        "layer": spec.name,
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
    dataplane: DataPlane = request.app.state.dataplane
    model = dataplane.model(name, request.query_params.get("version"))
    return Response(await dataplane.filters_png(model, layer), media_type="image/png")
