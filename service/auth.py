"""Optional API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

A dependency, so any router can require it; /healthz, /readyz and /metrics do
not (probes and scrapers carry no secrets). Compared in constant time, as bytes:
the header's raw bytes against the key's UTF-8, so a non-ASCII key sent as
UTF-8 matches. Settings refuse an empty key, so an empty header never matches.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from service.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is None:  # the default: no headers to parse on every request
        return
    headers = request.headers
    check_api_key(key, headers.get("x-api-key"), headers.get("authorization"))


def check_api_key(key: SecretStr | None, x_api_key: str | None, authorization: str | None) -> None:
    """The check itself, for every protocol (gRPC passes its metadata); Unauthorized."""
    if key is None:
        return
    expected = key.get_secret_value().encode()
    given = x_api_key
    if given is None:
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    if given is None:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent
    if not hmac.compare_digest(given.encode("latin-1", "replace"), expected):
        raise Unauthorized("invalid API key")
