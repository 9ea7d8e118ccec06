"""POST /explain?method=occlusion: which parts of the image the answer rests on.

One upload is decoded as /predict decodes it; the image and its occluded copies
then go through the model's dynamic batcher like any other rows (they are the
ideal batch), in chunks of at most `max_batch_size`, and never more than
`explain_max_variants` copies per request. The map and the PNG are computed in
the decode pool, not on the event loop. The numbers live in service/explain.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from service import explain
from service.auth import require_api_key
from service.bundle import PROBABILITIES_OUTPUT
from service.dataplane import DataPlane
from service.errors import InvalidParameter
from service.heatmap import heatmap_png
from service.models import ServedModel
from service.routes.inputs import read_images
from service.routes.predict import IMAGE_BODY, MODEL_PARAMS, query_param

router = APIRouter(dependencies=[Depends(require_api_key)])
IN_FLIGHT_CHUNKS = 4  # chunks of one request queued at once: keeps the batcher fed


def _int(query: QueryParams, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number of pixels, not {raw!r}") from None


def _float(query: QueryParams, name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidParameter(f"{name} must be a finite number, not {raw!r}")
    return value


def _label(model: ServedModel, raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    classes = model.bundle.classes
    if raw not in classes:
        shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
        raise InvalidParameter(
            f"model {model.name} has no label {raw!r}; labels: {shown}",
        )
    return classes.index(raw)


def _format(query: QueryParams) -> str:
    fmt = query.get("format") or "png"
    if fmt not in ("png", "json"):
        raise InvalidParameter(f"format must be png or json, not {fmt!r}")
    return fmt


@dataclass(frozen=True)
class Options:
    """What to explain and how, checked before any image is read."""

    label: int | None
    plan: explain.Plan
    fill: str
    fill_value: float | None


def options(model: ServedModel, query: QueryParams, max_variants: int, images: int = 1) -> Options:
    """The query's method, label, window, stride and fill for `images` images; 422 if bad."""
    method = query.get("method") or "occlusion"
    if method not in explain.METHODS:
        raise InvalidParameter(
            f"method must be one of {', '.join(explain.METHODS)}, not {method!r}"
        )
    label = _label(model, query.get("label"))
    height, width, _ = model.input_shape
    try:
        where = explain.plan(height, width, _int(query, "window"), _int(query, "stride"))
        if where.count * images > max_variants:
            raise explain.ExplainError(
                f"window {where.window} with stride {where.stride} makes "
                f"{where.count * images} occluded images; the limit is {max_variants} per "
                "request: use a larger stride or window"
            )
        fill_value = _float(query, "fill_value")
        fill = query.get("fill") or ("constant" if fill_value is not None else "mean")
        explain.check_fill(fill, fill_value)
    except explain.ExplainError as exc:
        raise InvalidParameter(str(exc)) from None
    return Options(label, where, fill, fill_value)


async def run(
    dataplane: DataPlane, model: ServedModel, image: np.ndarray, opts: Options, deadline: float
) -> explain.Explanation:
    """One preprocessed image (H, W, C) and its occluded copies through the model's batcher."""

    async def infer(batch: np.ndarray) -> np.ndarray:
        out = await dataplane.infer(model, batch, (PROBABILITIES_OUTPUT,), deadline=deadline)
        return out[PROBABILITIES_OUTPUT]

    return await explain.occlusion(
        infer,
        image,
        opts.plan,
        explain.fill_values(image, opts.fill, opts.fill_value),
        label=opts.label,
        chunk=dataplane.settings.max_batch_size,
        in_flight=IN_FLIGHT_CHUNKS,
    )


def result_doc(model: ServedModel, opts: Options, result: explain.Explanation) -> dict:
    """The JSON form of one explanation (shared by /explain and the V1 `:explain`)."""
    return {
        "label": model.bundle.classes[result.label],
        "probability": result.probability,
        "method": "occlusion",
        "window": opts.plan.window,
        "stride": opts.plan.stride,
        "fill": opts.fill,
        "variants": opts.plan.count,
        "heatmap": result.heatmap.tolist(),
    }


EXPLAIN_PARAMS = [
    query_param("method", "occlusion (the default and only one)", {"enum": ["occlusion"]}),
    query_param("label", "class to explain (default: the top label)", {"type": "string"}),
    query_param(
        "window",
        "patch side in input pixels (default: a quarter of the shorter side)",
        {"type": "integer", "minimum": 1},
    ),
    query_param(
        "stride", "patch step (default: half the window)", {"type": "integer", "minimum": 1}
    ),
    query_param(
        "fill",
        "patch content: the image's mean (default), zero, or constant (fill_value)",
        {"enum": list(explain.FILLS)},
    ),
    query_param("fill_value", "for fill=constant, in model-input units", {"type": "number"}),
]


@router.post(
    "/explain",
    summary="Occlusion sensitivity: the drop of a label's probability as a patch hides "
    "each part of the image (PNG heat map or JSON)",
    responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    response_class=Response,
    openapi_extra={
        "parameters": [
            query_param("format", "png (default) or json", {"enum": ["png", "json"]}),
            *EXPLAIN_PARAMS,
            *MODEL_PARAMS,
        ],
        "requestBody": IMAGE_BODY,
    },
)
async def explain_image(request: Request) -> Response:
    dataplane: DataPlane = request.app.state.dataplane
    deadline = dataplane.deadline()
    query = request.query_params
    fmt = _format(query)
    model = dataplane.model(query.get("model"), query.get("version"))
    opts = options(model, query, dataplane.settings.explain_max_variants)
    blobs, names = await read_images(request, dataplane.settings.max_images_per_request)
    if len(blobs) != 1:
        raise InvalidParameter(f"/explain takes exactly one image, not {len(blobs)}")
    image = (await dataplane.decode(model, blobs, names, deadline=deadline))[0]
    result = await run(dataplane, model, image, opts, deadline)
    if fmt == "png":
        name = model.bundle.classes[result.label]
        png = await dataplane.offload(heatmap_png, image, result.heatmap, name)
        return Response(png, media_type="image/png")
    doc = {
        "model": {"name": model.name, "version": model.version},
        "filename": names[0],
        **result_doc(model, opts, result),
    }
    return Response(json.dumps(doc, separators=(",", ":")).encode(), media_type="application/json")
