"""Every client-visible failure as a class, and the one place that renders them.

Raise a subclass of `APIError` (`UnknownModel("no model named 'x'")`): the
class carries the HTTP `status`, the stable `code` and any headers
(`Retry-After` on every 503, `WWW-Authenticate` on 401). Each protocol renders
the same exception its own way: `{"error": {"code", "message"}}` by default,
`{"error": "<message>"}` under `/v2` (Open Inference Protocol); another
protocol adds its shape with `register_shape(prefix, body)`. FastAPI's
validation errors and Starlette's 404/405 go through the same shapes, and
anything unexpected becomes a 500 with a generic message: the stack trace goes
to the log, never to the client. docs/api.md's error table is tested against
these classes (tests/service/test_error_classes.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("convserve.errors")

RETRY_AFTER_S = 1
OIP_PREFIX = "/v2"


class APIError(Exception):
    """A client-visible failure: `status`, machine-readable `code`, human `message`."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


# ---- 400: the request cannot be read ----------------------------------------
class BadRequest(APIError):
    status, code = 400, "bad_request"


class InvalidImage(BadRequest):
    code = "invalid_image"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class BadMultipart(BadRequest):
    code = "bad_multipart"


# ---- 401 --------------------------------------------------------------------
class Unauthorized(APIError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


# ---- 404: no such thing -----------------------------------------------------
class NotFound(APIError):
    status, code = 404, "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownVersion(NotFound):
    code = "unknown_version"


class UnknownLayer(NotFound):
    code = "unknown_layer"


class UnknownOutput(NotFound):
    code = "unknown_output"


class NoFilters(NotFound):
    code = "no_filters"


class MethodNotAllowed(APIError):
    status, code = 405, "method_not_allowed"


# ---- 409: the model repository cannot do that now (model lifecycle) ----------
class ModelControlOff(APIError):
    status, code = 409, "model_control_off"


class ModelLoadFailed(APIError):
    status, code = 409, "load_failed"


class DefaultModelUnload(APIError):
    status, code = 409, "default_model"


# ---- 413: over a limit ------------------------------------------------------
class TooLarge(APIError):
    status, code = 413, "too_large"


class ImageTooLarge(TooLarge):
    code = "image_too_large"


class TooManyImages(TooLarge):
    code = "too_many_images"


class UnsupportedMediaType(APIError):
    status, code = 415, "unsupported_media_type"


# ---- 422: readable, but not a valid request ---------------------------------
class InvalidParameter(APIError):
    status, code = 422, "invalid_parameter"


class NoImages(InvalidParameter):
    code = "no_images"


class InvalidShape(InvalidParameter):
    code = "invalid_shape"


# ---- 500 --------------------------------------------------------------------
class InternalError(APIError):
    status, code = 500, "internal_error"


class InferenceFailed(InternalError):
    code = "inference_failed"


# ---- 503: come back, here or elsewhere (Retry-After) ------------------------
class Unavailable(APIError):
    status, code = 503, "unavailable"
    headers = {"Retry-After": str(RETRY_AFTER_S)}


class Overloaded(Unavailable):
    code = "queue_full"


class Draining(Unavailable):
    code = "draining"


class Starting(Unavailable):
    code = "starting"


class StartFailed(Unavailable):
    code = "failed"


class Timeout(APIError):
    status, code = 504, "timeout"


def error_classes() -> list[type[APIError]]:
    """Every APIError class, base first (for the docs check and other protocols' tables)."""
    found, todo = [], [APIError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


# ---- rendering --------------------------------------------------------------
BodyShape = Callable[[str, str], bytes]  # (code, message) -> response body


def _default_shape(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _message_only(code: str, message: str) -> bytes:
    return json.dumps({"error": message}).encode()


_SHAPES: list[tuple[str, BodyShape]] = [(OIP_PREFIX, _message_only)]


def register_shape(prefix: str, shape: BodyShape) -> None:
    """Render errors under `prefix` (e.g. "/v1") with `shape` instead of the default."""
    _SHAPES.append((prefix.rstrip("/"), shape))


def error_body(path: str, code: str, message: str) -> bytes:
    for prefix, shape in _SHAPES:
        if path == prefix or path.startswith(prefix + "/"):
            return shape(code, message)
    return _default_shape(code, message)


def error_response(
    path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(path, code, message),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def render(path: str, exc: APIError) -> Response:
    """An APIError as the response of the protocol that serves `path`."""
    return error_response(path, exc.status, exc.code, exc.message, exc.headers)


_GENERIC = {cls.status: cls.code for cls in reversed(error_classes())}  # the base of each status


def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return render(request.url.path, exc)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return render(request.url.path, InvalidParameter("; ".join(p for p in parts if p) or "invalid"))


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _GENERIC.get(exc.status_code, "error")
    message = str(exc.detail) if exc.detail else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(request.url.path, exc.status_code, code, message, exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return render(request.url.path, InternalError("internal server error; see the server log"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def exception_response(request: Request, exc: Exception) -> Response:
    """The same rendering as the installed handlers, for code outside FastAPI's routing."""
    if isinstance(exc, APIError):
        return _api_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return _http_error(request, exc)
    return _unexpected(request, exc)
