"""Every operation's error answers in the OpenAPI document, in the body shape the
server really sends under that path (service/errors.py's shapes).

FastAPI documents only the success answer and a 422 in its own validation shape
(`{"detail": [...]}`), which the server never sends: its handlers render every
error as `{"error": {"code", "message"}}` (under /v2 and /v1 `{"error": "..."}`).
A client generated from the document, or a fuzzer checking answers against it
(tests/fuzz), would otherwise meet undocumented statuses and bodies.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from service.errors import error_body

_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def _schema_of(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {key: _schema_of(item) for key, item in value.items()},
            "required": list(value),
        }
    return {"type": "string"}


def _error_content(path: str) -> dict[str, Any]:
    sample = json.loads(error_body(path, "code", "message"))
    return {"application/json": {"schema": _schema_of(sample)}}


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """In place: a `default` (error) answer for every operation; documented 4xx/5xx
    answers get the real error body."""
    for path, item in schema.get("paths", {}).items():
        content = _error_content(path)
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, answer in responses.items():
                if status[0] in "45":
                    answer["content"] = content
                    answer["description"] = "An error (docs/api.md, Errors)"
            responses.setdefault(
                "default", {"description": "An error (docs/api.md, Errors)", "content": content}
            )
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_ONLY:  # the first refers to the second
        if name in components and f"#/components/schemas/{name}" not in json.dumps(schema):
            del components[name]
    return schema


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` (cached by FastAPI) carry the error answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        schema = generate()
        return add_error_responses(schema) if first else schema

    app.openapi = openapi  # type: ignore[method-assign]
