"""Pydantic models of the v2 inference request header (the JSON part of the body).

Tensor `data` stays untyped here: it is converted to numpy in one call by
`service.oip.request` rather than validated element by element.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.oip.protocol import ProtocolError


class _Open(BaseModel):
    # the protocol allows fields and parameters we do not use; ignore, don't refuse
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Open):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(_Open):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(_Open):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def parse_header(header: bytes) -> InferRequest:
    """Validate the JSON header; any problem becomes one readable 400 message."""
    try:
        return InferRequest.model_validate_json(header)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False)[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise ProtocolError(400, "invalid inference request: " + "; ".join(problems)) from None
