"""ModelInfer and ModelMetadata messages <-> the REST protocol's checked types.

A gRPC request becomes the same `InferRequest` the REST JSON header parses
into, so one checker (`service.oip.request.check_request`) serves both: FP32
as `raw_input_contents` (a zero-copy view) or typed `fp32_contents`; BYTES (one
encoded image file per element) either way. Outputs go back as
`raw_output_contents`, as Triton answers; `classification` on the
`probabilities` output gives Triton's "score:index:label" BYTES tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.grpc import grpc_predict_v2_pb2 as pb
from service.oip.codec import encode_bytes_tensor
from service.oip.protocol import BYTES, FP32, ProtocolError
from service.oip.request import InferCall, check_inputs, check_request
from service.oip.response import classify
from service.oip.schema import InferRequest, RequestInput, RequestOutput


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as the plain values REST's JSON would carry."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, which) if which else None
    return out


def parse_infer(request: pb.ModelInferRequest, bundle, max_batch: int) -> InferCall:
    """Check a ModelInferRequest against `bundle`; raises ProtocolError (status as on REST)."""
    inputs = [
        RequestInput(
            name=tensor.name,
            shape=list(tensor.shape),
            datatype=tensor.datatype,
            parameters=parameters(tensor.parameters),
        )
        for tensor in request.inputs
    ]
    parsed = InferRequest(
        id=request.id or None,
        parameters=parameters(request.parameters),
        inputs=inputs,
        outputs=[
            RequestOutput(name=out.name, parameters=parameters(out.parameters))
            for out in request.outputs
        ]
        or None,
    )
    check_inputs(parsed)
    raw = _raw(request, parsed.inputs[0])
    return check_request(parsed, raw, bundle, max_batch)


def _raw(request: pb.ModelInferRequest, spec: RequestInput) -> memoryview | None:
    """The input's bytes in the binary layout, or None with typed FP32 values put in `data`."""
    tensor = request.inputs[0]
    if "shared_memory_region" in spec.parameters:
        raise ProtocolError(400, "shared-memory tensors are not supported by this server")
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise ProtocolError(
                400,
                f"raw_input_contents has {len(request.raw_input_contents)} entries "
                f"for {len(request.inputs)} inputs",
            )
        if tensor.HasField("contents"):
            raise ProtocolError(
                400, f"input {spec.name!r} has both contents and raw_input_contents"
            )
        return memoryview(request.raw_input_contents[0])
    contents = tensor.contents
    if spec.datatype == BYTES:  # packed into the raw layout: one parser for both forms
        return memoryview(encode_bytes_tensor(contents.bytes_contents))
    if spec.datatype == FP32:
        if not contents.fp32_contents:
            raise ProtocolError(
                400, f"input {spec.name!r} has neither fp32_contents nor raw_input_contents"
            )
        spec.data = np.asarray(contents.fp32_contents, dtype=np.float32)
    return None  # any other datatype: the checker names the one it wants


def infer_response(
    *,
    model_name: str,
    model_version: str,
    call: InferCall,
    results: Mapping[str, np.ndarray],
    labels: Sequence[str],
) -> pb.ModelInferResponse:
    """Every requested output as `raw_output_contents`, in request order."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=call.id or ""
    )
    for wanted in call.outputs:
        array = results[wanted.name]
        tensor = response.outputs.add(name=wanted.name)
        if wanted.classification:
            strings = classify(array, wanted.classification, labels)
            tensor.datatype = BYTES
            tensor.shape.extend([array.shape[0], len(strings) // max(array.shape[0], 1)])
            response.raw_output_contents.append(encode_bytes_tensor([s.encode() for s in strings]))
        else:
            array = np.ascontiguousarray(array, dtype="<f4")
            tensor.datatype = FP32
            tensor.shape.extend(array.shape)
            response.raw_output_contents.append(array.tobytes())
    return response


def metadata_response(document: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The REST model-metadata document (service.oip.metadata) as its protobuf twin."""

    def tensors(items: Sequence[Mapping[str, Any]]) -> list:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=item["name"], datatype=item["datatype"], shape=item["shape"]
            )
            for item in items
        ]

    return pb.ModelMetadataResponse(
        name=document["name"],
        versions=document["versions"],
        platform=document["platform"],
        inputs=tensors(document["inputs"]),
        outputs=tensors(document["outputs"]),
    )
