"""One error type for the whole API and the handlers that render it as JSON.

Every failure a client can cause becomes an `APIError` with an HTTP status and
a stable `code`; the handlers installed by `install_error_handlers` render it
as `{"error": {"code", "message"}}` (or `{"error": "<message>"}` under `/v2`,
as the Open Inference Protocol asks). FastAPI's own validation errors and
Starlette's 404/405 go through the same shape, and anything unexpected becomes
a 500 with a generic message: the stack trace goes to the log, never to the
client.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("convserve.errors")

RETRY_AFTER_S = 1
OIP_PREFIX = "/v2"

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    503: "unavailable",
    504: "timeout",
}


class APIError(Exception):
    """A client-visible failure: HTTP status, machine-readable code, human message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.code!r}, {self.message!r})"


def unavailable(code: str, message: str) -> APIError:
    """503 with Retry-After: the client should come back, here or elsewhere."""
    return APIError(503, code, message, {"Retry-After": str(RETRY_AFTER_S)})


def error_body(path: str, code: str, message: str) -> bytes:
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        return json.dumps({"error": message}).encode()
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(
    path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(path, code, message),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(request.url.path, exc.status, exc.code, exc.message, exc.headers)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    message = "; ".join(p for p in parts if p) or "invalid request"
    return error_response(request.url.path, 422, "invalid_parameter", message)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _CODE_BY_STATUS.get(exc.status_code, "error")
    message = str(exc.detail) if exc.detail else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(request.url.path, exc.status_code, code, message, exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        request.url.path, 500, "internal_error", "internal server error; see the server log"
    )


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
