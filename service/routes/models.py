"""GET /models and GET /models/{name}: what is served, which versions, on which provider."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.auth import require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/models", summary="Every served model (latest version each)")
async def list_models(request: Request) -> JSONResponse:
    registry = request.app.state.dataplane.registry
    models = [
        {
            "name": m.name,
            "version": m.version,
            "versions": m.versions,
            "provider": m.provider,
            "classes": len(m.bundle.classes),
        }
        for m in registry.latest()
    ]
    return JSONResponse({"default": registry.default, "models": models})


@router.get("/models/{name}", summary="Bundle metadata, versions, feature-map layers, provider")
async def model_metadata(name: str, request: Request, version: str | None = None) -> JSONResponse:
    return JSONResponse(request.app.state.dataplane.model(name, version).metadata())
