"""GET /docs: Swagger UI from files installed with the service, not from a CDN.

FastAPI's default page loads Swagger UI from jsdelivr, which an offline
cluster cannot reach. The `fastapi-offline` package ships the Swagger UI 5
bundle (JavaScript, CSS, icon); they are served from /docs/assets, so /docs
needs nothing from outside. The online validator badge is switched off for
the same reason.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from service.auth import require_api_key
from service.errors import NotFound

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_cache: dict[str, bytes] = {}


def asset(name: str) -> bytes:
    """One Swagger UI file from the fastapi-offline package, read once."""
    if name not in _cache:
        _cache[name] = (resources.files("fastapi_offline") / "static" / name).read_bytes()
    return _cache[name]


@router.get("/docs", dependencies=[Depends(require_api_key)])
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="convserve API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no such file: /docs/assets/{name}")
    return Response(asset(name), media_type=media_type, headers={"Cache-Control": "max-age=86400"})
