"""GET /models and GET /models/{name}: what is served, which versions, on which provider."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.auth import require_api_key
from service.bundle import MODEL_FILE
from service.models import ServedModel
from service.routes.pictures import picture_names

router = APIRouter(dependencies=[Depends(require_api_key)])


def model_document(model: ServedModel) -> dict:
    """The /models/{name} document."""
    b = model.bundle
    return {
        "name": model.name,
        "version": model.version,
        "versions": model.versions,
        "provider": model.provider,
        "padded_batch_sizes": model.engine.padded_sizes,
        "execution": model.engine.execution,  # what the tuner chose and measured, if it ran
        "classes": b.classes,
        "input": b.input.model_dump(),
        "preprocessing": b.preprocessing.model_dump(),
        "feature_maps": [
            {**f.model_dump(exclude_none=True), "has_filters": f.name in model.filters}
            for f in b.feature_maps
        ],
        "metrics": b.metrics.model_dump(exclude_none=True),
        "parity": b.parity,
        "created": b.created.isoformat(),
        "tools": b.tools,
        "sha256": b.sha256,
        "model_file": str(model.path / MODEL_FILE),
        "pictures": picture_names(model.path),  # GET /models/{name}/pictures/{file}
    }


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
    return JSONResponse(model_document(request.app.state.dataplane.model(name, version)))
