"""POST /predict with a raw image body, without FastAPI's routing layers.

A raw body is the hot path (one image per request, from apps and load tests).
With a small model the event loop is the bottleneck, and under load about a
quarter of its time went to Starlette/FastAPI routing, dependency and
exception layers. This ASGI shortcut runs the same handler
(`routes.predict.predict`) with the same API-key check and error rendering. It
sits inside `RequestMiddleware`, so request id, metrics, the log line, the body
limit and the drain refusal apply as before; everything else falls through.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import require_api_key
from service.errors import exception_response
from service.routes.inputs import is_raw_image, media_type_of
from service.routes.predict import predict


class _PredictRoute:
    """What RequestMiddleware reads (`scope["route"].path`) for the metrics label."""

    path = "/predict"


PREDICT_ROUTE = _PredictRoute()


def _raw_image_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return is_raw_image(media_type_of(value.decode("latin-1")))
    return False


class RawPredictFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/predict"
            and _raw_image_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = PREDICT_ROUTE
        request = Request(scope, receive)
        try:
            await require_api_key(request)
            response = await predict(request)
        except Exception as exc:  # rendered exactly as FastAPI's handlers would
            response = exception_response(request, exc)
        await response(scope, receive, send)
