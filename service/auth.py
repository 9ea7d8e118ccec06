"""Optional API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

A dependency, so any router can require it; /healthz, /readyz and /metrics do
not (probes and scrapers carry no secrets). Compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import APIError


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
        raise APIError(
            401,
            "unauthorized",
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), expected):
        raise APIError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
