"""Turn a v2 infer request (JSON or binary form) into arrays checked against the model.

The hot path stays vectorised: binary FP32 is a `numpy.frombuffer` view, JSON
numbers are converted in one `numpy.asarray` call.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.bundle import Bundle
from service.oip.codec import decode_bytes_tensor, split_body
from service.oip.protocol import BYTES, BYTES_INPUT, FP32, IMAGE_INPUT, PROBABILITIES, ProtocolError
from service.oip.schema import InferRequest, RequestInput, RequestOutput, parse_header


@dataclass(frozen=True)
class OutputRequest:
    """One output to return: raw tensor, or top-`classification` labels when > 0."""

    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferCall:
    """A validated request: exactly one of `tensor` (FP32 NHWC) or `images` (encoded files)."""

    id: str | None
    outputs: tuple[OutputRequest, ...]
    tensor: np.ndarray | None = None
    images: list[bytes] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.images) if self.images is not None else len(self.tensor)


def parse_infer(
    body: bytes, header_length: str | None, bundle: Bundle, max_batch: int
) -> InferCall:
    """Parse and check a whole infer request against `bundle`; raises ProtocolError."""
    header, tail = split_body(body, header_length)
    request = parse_header(header)
    check_inputs(request)
    return check_request(request, _binary_slice(request.inputs[0], tail), bundle, max_batch)


def check_inputs(request: InferRequest) -> None:
    """The model takes exactly one of its two inputs per request."""
    if len(request.inputs) != 1:
        raise ProtocolError(
            400,
            f"send exactly one input, {IMAGE_INPUT!r} (FP32) or {BYTES_INPUT!r} (BYTES); "
            f"got {len(request.inputs)}",
        )


def check_request(
    request: InferRequest, raw: memoryview | None, bundle: Bundle, max_batch: int
) -> InferCall:
    """Check a parsed request with one input against `bundle` (REST and gRPC share this).

    `raw` is the input's bytes in the binary layout (FP32 little-endian, BYTES
    length-prefixed), or None when the values are in the input's `data`.
    """
    spec = request.inputs[0]
    outputs = _outputs(request, bundle)
    if spec.name == IMAGE_INPUT:
        tensor = _image_tensor(spec, raw, bundle, max_batch)
        return InferCall(id=request.id, outputs=outputs, tensor=tensor)
    if spec.name == BYTES_INPUT:
        images = _encoded_images(spec, raw, max_batch)
        return InferCall(id=request.id, outputs=outputs, images=images)
    raise ProtocolError(
        400, f"unknown input {spec.name!r}; this model takes {IMAGE_INPUT!r} or {BYTES_INPUT!r}"
    )


def _binary_slice(spec: RequestInput, tail: memoryview) -> memoryview | None:
    """The input's bytes from the binary tail, which it must fill exactly; None for JSON data."""
    if "shared_memory_region" in spec.parameters:
        raise ProtocolError(400, "shared-memory tensors are not supported by this server")
    size = spec.parameters.get("binary_data_size")
    if size is None:
        if len(tail):
            raise ProtocolError(
                400, f"{len(tail)} bytes of binary data follow the header but no input claims them"
            )
        if spec.data is None:
            raise ProtocolError(400, f"input {spec.name!r} has neither 'data' nor binary data")
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(400, f"input {spec.name!r}: binary_data_size must be an integer >= 0")
    if spec.data is not None:
        raise ProtocolError(400, f"input {spec.name!r} has both 'data' and binary_data_size")
    if size != len(tail):
        raise ProtocolError(
            400,
            f"input {spec.name!r} declares binary_data_size {size} "
            f"but {len(tail)} bytes follow the header",
        )
    return tail


def _check_batch(name: str, shape: list[int], max_batch: int) -> int:
    batch = shape[0]
    if batch < 1:
        raise ProtocolError(400, f"input {name!r}: batch dimension must be at least 1, got {batch}")
    if batch > max_batch:
        raise ProtocolError(
            413, f"input {name!r}: batch of {batch} exceeds the limit of {max_batch} per request"
        )
    return batch


def _image_tensor(
    spec: RequestInput, raw: memoryview | None, bundle: Bundle, max_batch: int
) -> np.ndarray:
    dims = [bundle.input.height, bundle.input.width, bundle.input.channels]
    if spec.datatype != FP32:
        raise ProtocolError(400, f"input {IMAGE_INPUT!r} must be FP32, got {spec.datatype!r}")
    if len(spec.shape) != 4 or spec.shape[1:] != dims:
        raise ProtocolError(
            400,
            f"input {IMAGE_INPUT!r} must have shape [-1, {', '.join(map(str, dims))}], "
            f"got {spec.shape}",
        )
    _check_batch(IMAGE_INPUT, spec.shape, max_batch)
    count = math.prod(spec.shape)
    if raw is not None:
        if len(raw) != count * 4:
            raise ProtocolError(
                400,
                f"input {IMAGE_INPUT!r}: shape {spec.shape} needs {count * 4} bytes of FP32, "
                f"got {len(raw)}",
            )
        tensor = np.frombuffer(raw, dtype="<f4").reshape(spec.shape)
        if not tensor.flags.aligned:
            tensor = tensor.copy()
    else:
        tensor = _json_numbers(spec.data, count, spec.shape)
    if not np.isfinite(tensor).all():
        raise ProtocolError(400, f"input {IMAGE_INPUT!r} contains NaN or infinite values")
    return tensor


def _json_numbers(data: Any, count: int, shape: list[int]) -> np.ndarray:
    try:
        values = np.asarray(data)
    except ValueError:  # ragged nesting
        raise ProtocolError(400, f"input {IMAGE_INPUT!r}: 'data' is not a regular array") from None
    if values.dtype.kind not in "iuf":
        raise ProtocolError(400, f"input {IMAGE_INPUT!r}: 'data' must hold only numbers")
    if values.size != count:
        raise ProtocolError(
            400, f"input {IMAGE_INPUT!r}: shape {shape} needs {count} values, got {values.size}"
        )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by the caller
        return values.astype(np.float32, copy=False).reshape(shape)


def _encoded_images(spec: RequestInput, raw: memoryview | None, max_batch: int) -> list[bytes]:
    if spec.datatype != BYTES:
        raise ProtocolError(400, f"input {BYTES_INPUT!r} must be BYTES, got {spec.datatype!r}")
    if len(spec.shape) != 1:
        raise ProtocolError(
            400,
            f"input {BYTES_INPUT!r} must have shape [-1] (one file per element), got {spec.shape}",
        )
    batch = _check_batch(BYTES_INPUT, spec.shape, max_batch)
    if raw is not None:
        return decode_bytes_tensor(raw, batch, BYTES_INPUT)
    data = spec.data
    if not isinstance(data, list) or len(data) != batch:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ProtocolError(
            400, f"input {BYTES_INPUT!r}: shape {spec.shape} needs a list of {batch}, got {got}"
        )
    return [_b64_element(item, index) for index, item in enumerate(data)]


def _b64_element(item: Any, index: int) -> bytes:
    """JSON form carries each file as a base64 string, or as {"b64": "..."} like /predict."""
    if isinstance(item, dict) and set(item) == {"b64"}:
        item = item["b64"]
    if not isinstance(item, str):
        raise ProtocolError(400, f"input {BYTES_INPUT!r}: element {index} must be a base64 string")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            400, f"input {BYTES_INPUT!r}: element {index} is not valid base64"
        ) from None


def _outputs(request: InferRequest, bundle: Bundle) -> tuple[OutputRequest, ...]:
    binary_default = _flag(request.parameters, "binary_data_output", False, "request")
    if not request.outputs:
        return (OutputRequest(PROBABILITIES, binary=binary_default),)
    known = [PROBABILITIES, *(layer.name for layer in bundle.feature_maps)]
    seen: set[str] = set()
    outputs = []
    for wanted in request.outputs:
        outputs.append(_output(wanted, known, binary_default))
        if wanted.name in seen:
            raise ProtocolError(400, f"output {wanted.name!r} is requested twice")
        seen.add(wanted.name)
    return tuple(outputs)


def _output(wanted: RequestOutput, known: list[str], binary_default: bool) -> OutputRequest:
    if wanted.name not in known:
        raise ProtocolError(
            400, f"unknown output {wanted.name!r}; this model has: {', '.join(known)}"
        )
    params = wanted.parameters
    if "shared_memory_region" in params:
        raise ProtocolError(400, "shared-memory tensors are not supported by this server")
    binary = _flag(params, "binary_data", binary_default, f"output {wanted.name!r}")
    count = params.get("classification", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ProtocolError(400, f"output {wanted.name!r}: classification must be an integer >= 0")
    if count and wanted.name != PROBABILITIES:
        raise ProtocolError(
            400, f"classification is available on {PROBABILITIES!r} only, not {wanted.name!r}"
        )
    return OutputRequest(wanted.name, binary=binary, classification=count)


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(400, f"{where}: parameter {key!r} must be true or false")
    return value
