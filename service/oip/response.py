"""Build v2 infer responses: JSON tensor data, or the binary tensor data extension.

Binary outputs follow the JSON header in the order they appear in it; the
header's size goes in `Inference-Header-Content-Length`, which is how
tritonclient finds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.classification import top_indices
from service.oip.codec import encode_bytes_tensor
from service.oip.protocol import BYTES, FP32, HEADER_LENGTH, ProtocolError
from service.oip.request import OutputRequest


@dataclass(frozen=True)
class InferResponse:
    """A finished response body with the headers and media type it needs."""

    body: bytes
    headers: dict[str, str]
    media_type: str


def classify(probabilities: np.ndarray, count: int, labels: Sequence[str]) -> list[str]:
    """Triton's classification extension: top-`count` per row as "value:index:label".

    Ties keep the lower index first (a stable sort), like Triton's comparison.
    Row-major, `min(count, classes)` strings per row.
    """
    top = min(count, probabilities.shape[1])
    rows = probabilities.tolist()
    return [
        f"{row[index]:f}:{index}:{labels[index]}"
        for row, row_order in zip(rows, top_indices(probabilities, top), strict=True)
        for index in row_order
    ]


def build_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputRequest],
    results: Mapping[str, np.ndarray],
    labels: Sequence[str],
) -> InferResponse:
    """Serialise `results` (name -> batch-first float32 array) as each output asked."""
    described: list[dict] = []
    chunks: list[bytes | memoryview] = []
    for wanted in outputs:
        array = results[wanted.name]
        entry: dict = {"name": wanted.name}
        if wanted.classification:
            strings = classify(array, wanted.classification, labels)
            entry["datatype"] = BYTES
            entry["shape"] = [array.shape[0], len(strings) // max(array.shape[0], 1)]
            if wanted.binary:
                chunk = encode_bytes_tensor([s.encode() for s in strings])
                entry["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                entry["data"] = strings
        else:
            array = np.ascontiguousarray(array, dtype="<f4")
            entry["datatype"] = FP32
            entry["shape"] = list(array.shape)
            if wanted.binary:
                entry["parameters"] = {"binary_data_size": array.nbytes}
                chunks.append(memoryview(array).cast("B"))
            else:
                if not np.isfinite(array).all():
                    raise ProtocolError(
                        400,
                        f"output {wanted.name!r} has non-finite values, which JSON cannot "
                        "carry; request it with binary_data: true",
                    )
                entry["data"] = array.ravel().tolist()
        described.append(entry)

    header: dict = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = described
    text = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return InferResponse(text, {}, "application/json")
    return InferResponse(
        b"".join([text, *chunks]),
        {HEADER_LENGTH: str(len(text))},
        "application/octet-stream",
    )
