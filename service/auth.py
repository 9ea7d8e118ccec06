"""Optional API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

A dependency, so any router can require it; /healthz, /readyz and /metrics do
not (probes and scrapers carry no secrets). Compared in constant time, as bytes:
the header's raw bytes against the key's UTF-8, so a non-ASCII key sent as
UTF-8 matches. Settings refuse an empty key, so an empty header never matches.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    expected = key.get_secret_value().encode()
    headers = request.headers
    given = headers.get("x-api-key")
    if given is None:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    if given is None:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent
    if not hmac.compare_digest(given.encode("latin-1"), expected):
        raise Unauthorized("invalid API key")
