"""KServe V1 `:explain`: `POST /v1/models/<name>[/versions/<v>]:explain`.

The body is the V1 `:predict` body (`{"instances": …}` or `{"inputs": …}`,
b64 image bytes or float tensors, parsed by service/v1/request.py); the answer
is KServe's `{"predictions": […], "explanations": […]}`, one occlusion map per
instance in /explain's JSON form. Options (`label`, `window`, `stride`, `fill`,
`fill_value`) come from the query string as for /explain. Instances run one
after another, so one request never holds more than a few chunks in the queue;
all their copies together count against `explain_max_variants`. This router
is included before the V1 one, whose `/models/{target}` would otherwise take
the `:explain` verb.
"""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.auth import require_api_key
from service.dataplane import DataPlane
from service.routes.explain import EXPLAIN_PARAMS, options, result_doc, run
from service.v1.request import parse_predict

router = APIRouter(prefix="/v1", tags=["TensorFlow Serving / KServe V1"])
_keyed = [Depends(require_api_key)]
_EXTRA = {"parameters": EXPLAIN_PARAMS}


@router.post(
    "/models/{name}:explain",
    dependencies=_keyed,
    summary="Explain (occlusion), KServe V1",
    openapi_extra=_EXTRA,
)
async def explain_latest(request: Request, name: str) -> Response:
    return await _explain(request, name, None)


@router.post(
    "/models/{name}/versions/{version}:explain",
    dependencies=_keyed,
    summary="Explain one version (occlusion), KServe V1",
    openapi_extra=_EXTRA,
)
async def explain_version(request: Request, name: str, version: str) -> Response:
    return await _explain(request, name, version)


async def _explain(request: Request, name: str, version: str | None) -> Response:
    dp: DataPlane = request.app.state.dataplane
    deadline = dp.deadline()
    model = dp.model(name, version)
    query = request.query_params
    options(model, query, dp.settings.explain_max_variants)  # bad options: 422 before the body
    body = await request.body()
    call = await dp.offload(parse_predict, body, model.bundle, dp.settings.max_images_per_request)
    images = (
        await dp.decode(model, call.images, deadline=deadline)
        if call.images is not None
        else call.tensor
    ).astype(np.float32, copy=False)
    opts = options(model, query, dp.settings.explain_max_variants, len(images))
    predictions, explanations = [], []
    for image in images:
        result = await run(dp, model, image, opts, deadline)
        predictions.append(result.probabilities.tolist())
        explanations.append(result_doc(model, opts, result))
    doc = {"predictions": predictions, "explanations": explanations}
    return Response(json.dumps(doc, separators=(",", ":")).encode(), media_type="application/json")
