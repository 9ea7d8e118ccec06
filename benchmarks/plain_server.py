"""Reference: the plain FastAPI + onnxruntime server most people would write.

One onnxruntime call per request, no batching across requests: read the body,
decode and resize in FastAPI's thread pool, run, answer JSON. Same
preprocessing code and session settings as convserve, so the difference
measured is the serving architecture, not the image work.

    PLAIN_MODEL=models/digits/1 uvicorn benchmarks.plain_server:app --workers 2

Env: PLAIN_MODEL (a bundle version directory), PLAIN_INTRA_OP_THREADS (0 =
onnxruntime's default), PLAIN_ALLOW_SPINNING (1, onnxruntime's default; 0 stops
idle intra-op threads busy-waiting), PLAIN_TOP_K (default 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from benchmarks.inprocess import load_model

_model = load_model(
    Path(os.environ.get("PLAIN_MODEL", "models/digits/1")),
    intra_op_threads=int(os.environ.get("PLAIN_INTRA_OP_THREADS", "0")),
    spinning=os.environ.get("PLAIN_ALLOW_SPINNING", "1") == "1",
)
_classes = _model.bundle.classes
_top_k = int(os.environ.get("PLAIN_TOP_K", "1"))

app = FastAPI(title="plain FastAPI + onnxruntime (benchmark reference)")


def _predict(blobs: list[tuple[str, bytes]]) -> list[dict]:
    batch = np.stack([_model.preprocess(data) for _, data in blobs])
    probs = _model.run(batch)
    out = []
    for (name, _), row in zip(blobs, probs, strict=True):
        order = np.argsort(row)[::-1][:_top_k]
        top = [{"label": _classes[i], "probability": float(row[i])} for i in order]
        out.append({"filename": name, **top[0], "top_k": top})
    return out


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        blobs = [(f.filename or "", await f.read()) for f in form.getlist("file")]
    else:
        blobs = [("", await request.body())]
    predictions = await run_in_threadpool(_predict, blobs)
    return JSONResponse({"model": {"name": _model.bundle.name}, "predictions": predictions})
