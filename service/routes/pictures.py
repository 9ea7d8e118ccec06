"""GET /models/{name}/pictures[/{file}]: the PNGs training wrote into the bundle.

Training curves, the confusion matrix and the augmentation grid. Only plain
`*.png` files directly inside the bundle directory are served, found by
listing it (a name is looked up in that list, never joined onto a path), so
no request can reach anything else on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, JSONResponse

from service.auth import require_api_key
from service.errors import NotFound
from service.routes.predict import MODEL_PARAMS

router = APIRouter(dependencies=[Depends(require_api_key)])
PICTURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png")


def picture_names(bundle_dir: Path) -> list[str]:
    """The bundle's pictures, sorted; symbolic links and other files are left out."""
    try:
        entries = list(bundle_dir.iterdir())
    except OSError:
        return []
    return sorted(
        p.name for p in entries if PICTURE.fullmatch(p.name) and not p.is_symlink() and p.is_file()
    )


@router.get(
    "/models/{name}/pictures",
    summary="The pictures the bundle holds (training curves, confusion matrix, augmentation)",
    openapi_extra={"parameters": [MODEL_PARAMS[1]]},
)
async def list_pictures(name: str, request: Request) -> JSONResponse:
    model = request.app.state.dataplane.model(name, request.query_params.get("version"))
    names = picture_names(model.path)
    return JSONResponse(
        {
            "model": {"name": model.name, "version": model.version},
            "pictures": [
                {"name": n, "url": f"/models/{model.name}/pictures/{n}?version={model.version}"}
                for n in names
            ],
        }
    )


@router.get(
    "/models/{name}/pictures/{file}",
    summary="One picture from the bundle, as written at training time",
    response_class=FileResponse,
    openapi_extra={"parameters": [MODEL_PARAMS[1]]},
)
async def picture(name: str, file: str, request: Request) -> FileResponse:
    model = request.app.state.dataplane.model(name, request.query_params.get("version"))
    names = picture_names(model.path)
    if file not in names:
        raise NotFound(
            f"model {model.name} version {model.version} has no picture {file!r}; "
            f"pictures: {', '.join(names) or 'none'}"
        )
    return FileResponse(model.path / file, media_type="image/png")
