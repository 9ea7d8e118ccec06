"""Reference: the leanest Python server for the same work, a bare ASGI app on uvicorn.

No framework, no middleware, no logging, no metrics, no limits: read the body,
decode and resize it (the service's own `preprocess`) and run onnxruntime at
batch 1 right on the event loop, answer a few bytes of JSON. What is left over
the in-process time is uvicorn, the socket and the client; what convserve adds
over this is its request path. Not a server anyone should deploy.

    BARE_MODEL=benchmarks/.cache/models/course256/1 uvicorn benchmarks.bare_server:app --workers 2

Env: BARE_MODEL (a bundle version directory), BARE_INTRA_OP_THREADS (default 1:
one per worker process).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.types import Receive, Scope, Send

from benchmarks.inprocess import load_model

_model = load_model(
    Path(os.environ.get("BARE_MODEL", "models/digits/1")),
    intra_op_threads=int(os.environ.get("BARE_INTRA_OP_THREADS", "1")),
    spinning=False,
)
_HEADERS = [(b"content-type", b"application/json")]


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await _body(receive)
    status, out = 200, b'{"status":"ok"}'
    if scope["method"] == "POST":
        try:
            probs = _model.run(_model.preprocess(body)[None])[0]
            best = int(probs.argmax())
            top = {"label": _model.bundle.classes[best], "probability": float(probs[best])}
            out = json.dumps({"predictions": [top]}).encode()  # the shape the benchmarks check
        except Exception as exc:  # a reference, not a product: any failure is a 400
            status, out = 400, json.dumps({"error": str(exc)}).encode()
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": out})
