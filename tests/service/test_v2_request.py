"""Parsing v2 infer requests, on bytes alone, with NVIDIA's tritonclient building them
so both wire forms (JSON and the binary tensor extension) match the real client."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http import InferenceServerClient

from service.bundle import Bundle
from service.oip.codec import decode_bytes_tensor, decompress, encode_bytes_tensor
from service.oip.protocol import ProtocolError
from service.oip.request import OutputRequest, parse_infer
from tests.service.oip_support import toy_bundle


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return toy_bundle()


def _request(inputs, outputs=None, **kw) -> tuple[bytes, str | None]:
    body, size = InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kw)
    return body, (None if size is None else str(size))


def _fp32_input(array: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", list(array.shape), "FP32")
    return tensor.set_data_from_numpy(array, binary_data=binary)


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_input_arrives_bit_exact(bundle, binary):
    array = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    body, length = _request([_fp32_input(array, binary)], request_id="req-7")
    call = parse_infer(body, length, bundle, max_batch=8)
    assert call.id == "req-7"
    assert call.images is None and call.batch_size == 3
    assert call.tensor.dtype == np.float32
    np.testing.assert_array_equal(call.tensor, array)
    # no outputs asked: probabilities, binary as tritonclient's binary_data_output asks
    assert call.outputs == (OutputRequest("probabilities", binary=True),)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_input_carries_files(bundle, binary):
    files = [b"\x89PNG\r\n\x1a\n\x00fake", b"\x00\x01\x02" * 50]
    tensor = httpclient.InferInput("image_bytes", [2], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(files, dtype=object))
    else:  # JSON form: tritonclient can only send text, so files travel as base64
        encoded = [base64.b64encode(f) for f in files]
        tensor.set_data_from_numpy(np.array(encoded, dtype=object), binary_data=False)
    body, length = _request([tensor])
    call = parse_infer(body, length, bundle, max_batch=8)
    assert call.images == files and call.tensor is None


def test_json_bytes_accepts_b64_objects(bundle):
    header = {
        "inputs": [
            {
                "name": "image_bytes",
                "shape": [1],
                "datatype": "BYTES",
                "data": [{"b64": base64.b64encode(b"abc").decode()}],
            }
        ]
    }
    call = parse_infer(json.dumps(header).encode(), None, bundle, max_batch=8)
    assert call.images == [b"abc"]


def test_outputs_parameters(bundle):
    array = np.zeros((1, 8, 8, 1), np.float32)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3),
        httpclient.InferRequestedOutput("conv2d", binary_data=True),
    ]
    body, length = _request([_fp32_input(array, True)], outputs)
    call = parse_infer(body, length, bundle, max_batch=8)
    assert call.outputs == (
        OutputRequest("probabilities", binary=False, classification=3),
        OutputRequest("conv2d", binary=True),
    )


def _bad(bundle, header: dict, tail: bytes = b"", length: str | None = None) -> ProtocolError:
    text = json.dumps(header).encode()
    if tail and length is None:
        length = str(len(text))
    with pytest.raises(ProtocolError) as caught:
        parse_infer(text + tail, length, bundle, max_batch=4)
    return caught.value


def _image(shape=(1, 8, 8, 1), datatype="FP32", **extra) -> dict:
    return {"name": "image", "shape": list(shape), "datatype": datatype, **extra}


@pytest.mark.parametrize(
    ("header", "tail", "status", "fragment"),
    [
        ({"inputs": [_image(datatype="INT32", data=[0] * 64)]}, b"", 400, "must be FP32"),
        ({"inputs": [_image((1, 9, 8, 1), data=[0] * 72)]}, b"", 400, "must have shape"),
        ({"inputs": [_image(data=[0] * 63)]}, b"", 400, "needs 64 values"),
        ({"inputs": [_image(data=["x"] * 64)]}, b"", 400, "only numbers"),
        ({"inputs": [_image((5, 8, 8, 1), data=[0] * 320)]}, b"", 413, "exceeds the limit"),
        ({"inputs": [_image((0, 8, 8, 1), data=[])]}, b"", 400, "at least 1"),
        ({"inputs": [_image(parameters={"binary_data_size": 255})]}, b"\0" * 255, 400, "needs 256"),
        ({"inputs": [_image(parameters={"binary_data_size": 256})]}, b"\0" * 200, 400, "declares"),
        ({"inputs": [_image()]}, b"", 400, "neither"),
        ({"inputs": []}, b"", 400, "exactly one input"),
        ({"inputs": [{**_image(data=[0] * 64), "name": "pixels"}]}, b"", 400, "unknown input"),
        ({"inputs": [{"name": "image"}]}, b"", 400, "inputs.0.shape"),
        (
            {"inputs": [_image(data=[0] * 64)], "outputs": [{"name": "dense_9"}]},
            b"",
            400,
            "unknown output 'dense_9'",
        ),
        (
            {
                "inputs": [_image(data=[0] * 64)],
                "outputs": [{"name": "conv2d", "parameters": {"classification": 2}}],
            },
            b"",
            400,
            "classification is available",
        ),
        (
            {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP32", "data": [1]}]},
            b"",
            400,
            "must be BYTES",
        ),
        (
            {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["%"]}]},
            b"",
            400,
            "not valid base64",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 9},
                    }
                ]
            },
            struct.pack("<I", 5) + b"abcde",
            400,
            "ends before element 1",
        ),
    ],
)
def test_malformed_requests_are_refused_clearly(bundle, header, tail, status, fragment):
    error = _bad(bundle, header, tail)
    assert error.status == status
    assert fragment in error.message


def test_header_length_larger_than_body(bundle):
    with pytest.raises(ProtocolError, match="body has only 10 bytes") as caught:
        parse_infer(b"{" * 10, "11", bundle, max_batch=4)
    assert caught.value.status == 400


def test_not_json_is_a_400(bundle):
    with pytest.raises(ProtocolError, match="invalid inference request") as caught:
        parse_infer(b"\x89PNG not json", None, bundle, max_batch=4)
    assert caught.value.status == 400


def test_bytes_tensor_round_trip():
    items = [b"", b"a", b"\x00" * 70000]
    raw = encode_bytes_tensor(items)
    assert decode_bytes_tensor(memoryview(raw), 3, "x") == items
    with pytest.raises(ProtocolError, match="left over"):
        decode_bytes_tensor(memoryview(raw + b"!"), 3, "x")


def test_decompress_gzip_deflate_and_limits():
    payload = b'{"inputs": []}' * 100
    packed = zlib.compress(payload)
    assert decompress(packed, "deflate", limit=len(payload)) == payload
    gz = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    assert decompress(gz.compress(payload) + gz.flush(), "gzip", limit=10**6) == payload
    with pytest.raises(ProtocolError) as caught:
        decompress(packed, "deflate", limit=len(payload) - 1)
    assert caught.value.status == 413
    with pytest.raises(ProtocolError) as caught:
        decompress(payload, "br", limit=10**6)
    assert caught.value.status == 415


def test_non_finite_inputs_are_refused(bundle):
    too_big = json.dumps({"inputs": [_image(data=[1e39] * 64)]}).encode()  # > float32 max
    nan = np.zeros(64, np.float32)
    nan[5] = np.nan
    binary = _fp32_input(nan.reshape(1, 8, 8, 1), True)
    for body, length in [(too_big, None), _request([binary])]:
        with pytest.raises(ProtocolError, match="NaN or infinite") as caught:
            parse_infer(body, length, bundle, max_batch=4)
        assert caught.value.status == 400
