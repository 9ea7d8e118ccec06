"""GET / and GET /static/{file}: the page to try the model, from package data.

Plain HTML, CSS and JavaScript in service/static (no build step, nothing from
outside: clusters are offline). Every response carries a Content-Security-
Policy of `default-src 'self'`; images may also be `blob:` URLs, because the
page fetches pictures with the API key header and shows them from memory.
The page and its files need no key (they hold no data); every call the page
makes does.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from service.errors import NotFound

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _load() -> dict[str, bytes]:
    """Every file of service/static by name, read once (a few kB in all)."""
    root = resources.files("service") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and "." + entry.name.rpartition(".")[2] in MEDIA_TYPES
    }


FILES = _load()


def _serve(name: str) -> Response:
    body = FILES.get(name)
    if body is None:
        raise NotFound(f"no such file: /static/{name}")
    media_type = MEDIA_TYPES["." + name.rpartition(".")[2]]
    return Response(body, media_type=media_type, headers=HEADERS)


@router.get("/")
async def page() -> Response:
    return _serve("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _serve(name)
