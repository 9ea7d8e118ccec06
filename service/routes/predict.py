"""POST /predict: images in, labels and probabilities out (the main endpoint).

Hand-built JSON and a plain `Request` parameter keep FastAPI's validation and
response-model machinery off the hot path; the parameters are still described
in the OpenAPI document.
"""

from __future__ import annotations

import json
import time

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.auth import require_api_key
from service.bundle import PROBABILITIES_OUTPUT
from service.errors import InvalidParameter
from service.routes.inputs import read_images

router = APIRouter(dependencies=[Depends(require_api_key)])
DEFAULT_TOP_K = 5

IMAGE_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "instances": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"b64": {"type": "string"}}},
                    }
                },
            }
        },
    },
}


def query_param(name: str, description: str, schema: dict) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


MODEL_PARAMS = [
    query_param("model", "model name (default: the configured default model)", {"type": "string"}),
    query_param("version", "model version (default: the highest)", {"type": "string"}),
]


def parse_top_k(raw: str | None, classes: int) -> int:
    if raw is None or raw == "":
        return min(DEFAULT_TOP_K, classes)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= classes:
        raise InvalidParameter(f"top_k must be an integer from 1 to {classes}, not {raw!r}")
    return value


def predictions_json(
    name: str, version: str, classes: list[str], probs: np.ndarray, filenames: list, k: int
) -> bytes:
    """The /predict answer, built once as plain lists (float32 -> exact Python floats)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist()
    rows = probs.tolist()
    predictions = []
    for filename, row, top in zip(filenames, rows, order, strict=True):
        ranked = [{"label": classes[j], "probability": row[j]} for j in top]
        predictions.append(
            {
                "filename": filename,
                "label": ranked[0]["label"],
                "probability": ranked[0]["probability"],
                "top_k": ranked,
            }
        )
    doc = {"model": {"name": name, "version": version}, "predictions": predictions}
    return json.dumps(doc, separators=(",", ":")).encode()


@router.post(
    "/predict",
    summary="Classify one or many images",
    openapi_extra={
        "parameters": [
            *MODEL_PARAMS,
            query_param(
                "top_k", "how many ranked labels per image (default 5)", {"type": "integer"}
            ),
        ],
        "requestBody": IMAGE_BODY,
    },
)
async def predict(request: Request) -> Response:
    state = request.app.state
    deadline = time.monotonic() + state.settings.request_timeout_s
    query = request.query_params
    model = state.registry.resolve(query.get("model"), query.get("version"))
    classes = model.bundle.classes
    k = parse_top_k(query.get("top_k"), len(classes))
    blobs, names = await read_images(request, state.settings.max_images_per_request)
    batch = await model.decode(blobs, names)
    out = await model.infer(batch, (PROBABILITIES_OUTPUT,), deadline=deadline)
    body = predictions_json(model.name, model.version, classes, out[PROBABILITIES_OUTPUT], names, k)
    return Response(body, media_type="application/json")
