"""Helpers for the gRPC tests: a raw stub on our own messages and a few canned requests."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import tritonclient.grpc.aio as tgrpc_aio
from PIL import Image
from tritonclient.utils import InferenceServerException

from service.grpc import grpc_predict_v2_pb2 as pb
from service.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

KEY = "s3cret"
# max_queue=1 and a long gather window: while one image waits, the others find the queue full
FULL_QUEUE = {
    "max_queue": 1,
    "max_batch_size": 64,
    "max_batch_delay_ms": 500,
    "inline_decode_max_pixels": 0,
}
AUTH = (("authorization", f"Bearer {KEY}"),)


def stub(target: str) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def bytes_request(blobs: list[bytes], *, raw: bool, model: str = "digits") -> pb.ModelInferRequest:
    """image_bytes as raw_input_contents (length-prefixed) or typed bytes_contents."""
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="image_bytes", datatype="BYTES", shape=[len(blobs)])
    if raw:
        request.raw_input_contents.append(b"".join(len(b).to_bytes(4, "little") + b for b in blobs))
    else:
        tensor.contents.bytes_contents.extend(blobs)
    return request


def tensor_request(batch: np.ndarray, *, raw: bool) -> pb.ModelInferRequest:
    """An FP32 NHWC batch as raw little-endian bytes or typed fp32_contents."""
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=list(batch.shape))
    if raw:
        request.raw_input_contents.append(batch.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    return request


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    (output,) = response.outputs
    assert output.name == "probabilities" and output.datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(output.shape)


def noise_png(side: int, seed: int = 0, *, rgb: bool = False) -> bytes:
    """A PNG of random grey (or colour) pixels: hardly compressible."""
    shape = (side, side, 3) if rgb else (side, side)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def infer_each(target: str, blobs: list[bytes]) -> list[str]:
    """Every image in its own concurrent tritonclient (aio) infer: "OK" or the status."""

    async def fire() -> list[str]:
        async with tgrpc_aio.InferenceServerClient(target) as client:

            async def one(data: bytes) -> str:
                tensor = tgrpc_aio.InferInput("image_bytes", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([data], dtype=object))
                try:
                    await client.infer("digits", [tensor])
                except InferenceServerException as exc:
                    return str(exc.status())
                return "OK"

            return await asyncio.gather(*(one(data) for data in blobs))

    return asyncio.run(fire())
