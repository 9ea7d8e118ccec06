"""Triton's model repository extension over gRPC: RepositoryIndex, RepositoryModelLoad/Unload.

The same lifecycle control as the REST routes (service/routes/repository.py),
with the same refusals: a `RepositoryError` becomes the APIError REST answers
with, and server.py turns that error's HTTP status into the gRPC code every
other error gets (404 NOT_FOUND, 409 FAILED_PRECONDITION, ...), so
`tritonclient.grpc`'s get_model_repository_index, load_model and unload_model
behave as they do over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.dataplane import DataPlane
from service.errors import BadRequest, Starting
from service.grpc import grpc_predict_v2_pb2 as pb
from service.lifecycle import ModelControl, RepositoryError
from service.routes.repository import api_error

# tritonclient.grpc's unload_model always sends it; without ensembles it means nothing
_UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


def _control(dataplane: DataPlane, repository_name: str) -> ModelControl:
    if repository_name:
        raise BadRequest(
            f"unknown repository_name {repository_name!r}: convserve serves one model "
            "repository (CONVSERVE_MODEL_DIR); leave repository_name empty"
        )
    if dataplane.control is None:
        raise Starting("the model repository is not open yet; retry shortly")
    return dataplane.control


def _model_name(name: str) -> str:
    """A model is a directory directly under model_dir: no paths, no `..`."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise BadRequest(f"model_name must name a directory of the model repository, not {name!r}")
    return name


def index(dataplane: DataPlane, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
    """Every version on disk or served, with its state and the reason it is not served."""
    entries = _control(dataplane, request.repository_name).index.entries(ready_only=request.ready)
    return pb.RepositoryIndexResponse(
        models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
    )


async def load(
    dataplane: DataPlane, request: pb.RepositoryModelLoadRequest
) -> pb.RepositoryModelLoadResponse:
    """Explicit mode: serve what the model's directory now holds."""
    control = _control(dataplane, request.repository_name)
    name = _model_name(request.model_name)
    if request.parameters:
        raise BadRequest(
            f"load parameters {sorted(request.parameters)} are not supported: convserve loads "
            "the bundle as it is in the model directory (no config or file overrides)"
        )
    try:
        await control.load(name)
    except RepositoryError as exc:
        raise api_error(exc) from None
    return pb.RepositoryModelLoadResponse()


async def unload(
    dataplane: DataPlane, request: pb.RepositoryModelUnloadRequest
) -> pb.RepositoryModelUnloadResponse:
    """Explicit mode: stop serving every version of a model; returns once they are freed."""
    control = _control(dataplane, request.repository_name)
    name = _model_name(request.model_name)
    _only(request.parameters, _UNLOAD_PARAMETERS, "unload")
    try:
        await control.unload(name)
    except RepositoryError as exc:
        raise api_error(exc) from None
    return pb.RepositoryModelUnloadResponse()


def _only(parameters: Mapping[str, object], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(parameters) - allowed)
    if unknown:
        raise BadRequest(f"{what} parameters {unknown} are not supported")
