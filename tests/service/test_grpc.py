"""The Open Inference Protocol over gRPC, against a live server, with NVIDIA's tritonclient.

One server (API key on, gRPC on a free port, an 8 MiB message limit) for the
module; the queue and deadline tests start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.grpc import grpc_predict_v2_pb2 as pb
from tests.service.grpc_support import (
    AUTH,
    FULL_QUEUE,
    KEY,
    bytes_request,
    infer_each,
    noise_png,
    probabilities,
    stub,
    tensor_request,
)
from tests.service.hardening_support import slow_jpeg
from tests.service.serving import (
    LiveServer,
    distinct_label_images,
    free_port,
    reference,
    settings,
)

HEADERS = {"authorization": f"Bearer {KEY}"}
LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    cfg = settings(grpc_port=free_port(), api_key=KEY, max_body_bytes=LIMIT)
    with LiveServer(cfg) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[tgrpc.InferenceServerClient]:
    with tgrpc.InferenceServerClient(live.grpc_target) as c:
        yield c


@pytest.fixture(scope="module")
def raw(live: LiveServer):
    channel, service = stub(live.grpc_target)
    yield service
    channel.close()


def _images(count: int) -> list[bytes]:
    return [data for _, data in distinct_label_images(count)]


def _code(call, *args, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, **kw)
    return failure.value.code(), failure.value.details()


def test_health_metadata_and_readiness(client: tgrpc.InferenceServerClient, live) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits", headers=HEADERS)
    assert client.is_model_ready("digits", "1", headers=HEADERS)
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "convserve" and "classification" in server["extensions"]
    meta = client.get_model_metadata("digits", headers=HEADERS, as_json=True)
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"image": ("FP32", ["-1", "32", "32", "1"]), "image_bytes": ("BYTES", ["-1"])}
    assert [t["name"] for t in meta["outputs"]][:2] == ["probabilities", "conv2d_1"]


def test_grpc_health_checking_protocol(live: LiveServer) -> None:
    with grpc.insecure_channel(live.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        code, _ = _code(health.Check, health_pb2.HealthCheckRequest(service="nope"))
        assert code == grpc.StatusCode.NOT_FOUND
        first = next(iter(health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)))
        assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_bytes_images_with_tritonclient_equal_onnxruntime(client) -> None:
    images = _images(6)
    tensor = tgrpc.InferInput("image_bytes", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    result = client.infer("digits", [tensor], headers=HEADERS, request_id="r-1")
    got = result.as_numpy("probabilities")
    assert result.get_response().id == "r-1"
    np.testing.assert_array_equal(got, reference(images)["probabilities"])


def test_fp32_raw_and_typed_contents_give_the_same_bits(client, raw) -> None:
    batch = np.random.default_rng(1).random((3, 32, 32, 1), dtype=np.float32)
    tensor = tgrpc.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)  # tritonclient sends raw_input_contents
    by_triton = client.infer("digits", [tensor], headers=HEADERS).as_numpy("probabilities")
    typed = probabilities(raw.ModelInfer(tensor_request(batch, raw=False), metadata=AUTH))
    as_raw = probabilities(raw.ModelInfer(tensor_request(batch, raw=True), metadata=AUTH))
    want = reference_tensor(batch)
    np.testing.assert_array_equal(by_triton, want)
    np.testing.assert_array_equal(typed, want)
    np.testing.assert_array_equal(as_raw, want)


def reference_tensor(batch: np.ndarray) -> np.ndarray:
    from tests.service.serving import reference_session

    return reference_session().run(["probabilities"], {"image": batch})[0]


def test_typed_bytes_contents(raw) -> None:
    images = _images(3)
    answer = raw.ModelInfer(bytes_request(images, raw=False), metadata=AUTH)
    np.testing.assert_array_equal(probabilities(answer), reference(images)["probabilities"])


def test_classification_parameter(client) -> None:
    images = _images(2)
    tensor = tgrpc.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    top = tgrpc.InferRequestedOutput("probabilities", class_count=3)
    labels = client.infer("digits", [tensor], outputs=[top], headers=HEADERS)
    strings = labels.as_numpy("probabilities")
    assert strings.shape == (2, 3)
    for row, (label, _) in zip(strings, distinct_label_images(2), strict=True):
        score, index, name = row[0].decode().split(":")
        assert (index, name) == (str(label), str(label)) and float(score) > 0.5


def test_feature_map_output(client) -> None:
    images = _images(2)
    tensor = tgrpc.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    outputs = [tgrpc.InferRequestedOutput("conv2d_1"), tgrpc.InferRequestedOutput("probabilities")]
    result = client.infer("digits", [tensor], outputs=outputs, headers=HEADERS)
    want = reference(images, ["conv2d_1", "probabilities"])
    np.testing.assert_array_equal(result.as_numpy("conv2d_1"), want["conv2d_1"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), want["probabilities"])


def test_messages_above_grpcs_4_mib_default_are_accepted(raw) -> None:
    big = noise_png(1300, rgb=True)  # ~5 MiB: over gRPC's default, under max_body_bytes
    assert 4 * 1024 * 1024 < len(big) < LIMIT
    answer = raw.ModelInfer(bytes_request([big], raw=True), metadata=AUTH, timeout=60)
    assert probabilities(answer).shape == (1, 10)
    code, details = _code(
        raw.ModelInfer, bytes_request([big, big], raw=True), metadata=AUTH, timeout=60
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details


def _malformed() -> dict[str, tuple[pb.ModelInferRequest, str]]:
    wrong_shape = tensor_request(np.zeros((1, 16, 16, 1), np.float32), raw=True)
    short = tensor_request(np.zeros((1, 32, 32, 1), np.float32), raw=True)
    short.raw_input_contents[0] = short.raw_input_contents[0][:100]
    wrong_type = tensor_request(np.zeros((1, 32, 32, 1), np.float32), raw=True)
    wrong_type.inputs[0].datatype = "INT32"
    unknown_input = bytes_request([b"x"], raw=True)
    unknown_input.inputs[0].name = "pixels"
    both = tensor_request(np.zeros((1, 32, 32, 1), np.float32), raw=True)
    both.inputs[0].contents.fp32_contents.append(1.0)
    classification_on_map = bytes_request(_images(1), raw=True)
    out = classification_on_map.outputs.add(name="conv2d_1")
    out.parameters["classification"].int64_param = 2
    unknown_output = bytes_request(_images(1), raw=True)
    unknown_output.outputs.add(name="logits")
    nan = tensor_request(np.full((1, 32, 32, 1), np.nan, np.float32), raw=True)
    return {
        "wrong shape": (wrong_shape, "must have shape [-1, 32, 32, 1]"),
        "raw too short": (short, "needs 4096 bytes of FP32, got 100"),
        "wrong datatype": (wrong_type, "must be FP32"),
        "unknown input": (unknown_input, "unknown input 'pixels'"),
        "raw and typed": (both, "both contents and raw_input_contents"),
        "classification on a map": (classification_on_map, "classification is available"),
        "unknown output": (unknown_output, "unknown output 'logits'"),
        "NaN": (nan, "NaN or infinite"),
        "not an image": (bytes_request([b"not a png"], raw=True), "cannot identify image"),
        "no inputs": (pb.ModelInferRequest(model_name="digits"), "exactly one input"),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_requests_are_invalid_argument(raw, case: str) -> None:
    request, message = _malformed()[case]
    code, details = _code(raw.ModelInfer, request, metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert message in details


def test_unknown_model_and_version_are_not_found(client, raw) -> None:
    tensor = tgrpc.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(_images(1), dtype=object))
    with pytest.raises(InferenceServerException) as failure:
        client.infer("nope", [tensor], headers=HEADERS)
    assert failure.value.status() == "StatusCode.NOT_FOUND"
    assert "no model named 'nope'" in failure.value.message()
    code, details = _code(
        raw.ModelMetadata, pb.ModelMetadataRequest(name="digits", version="9"), metadata=AUTH
    )
    assert code == grpc.StatusCode.NOT_FOUND and "no version '9'" in details


def test_api_key_from_metadata(raw) -> None:
    request = bytes_request(_images(1), raw=True)
    code, details = _code(raw.ModelInfer, request)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "API key is required" in details
    code, _ = _code(raw.ModelInfer, request, metadata=(("x-api-key", "wrong"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert raw.ModelInfer(request, metadata=(("x-api-key", KEY),)).outputs
    code, _ = _code(raw.ModelReady, pb.ModelReadyRequest(name="digits"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert raw.ServerReady(pb.ServerReadyRequest()).ready  # health needs no key


def test_client_deadline_is_the_requests_deadline(live: LiveServer, raw) -> None:
    """A call whose deadline passes while its image decodes is never run by the model."""
    before = _batches(live)
    code, _ = _code(
        raw.ModelInfer,
        bytes_request([slow_jpeg(2048, seed=2)], raw=True),  # ~0.13 s to decode
        metadata=AUTH,
        timeout=0.02,
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raw.ServerReady(pb.ServerReadyRequest()).ready
    assert _batches(live) == before


def _batches(live: LiveServer) -> str:
    text = httpx.get(live.url + "/metrics").text
    return "\n".join(line for line in text.splitlines() if "convserve_batch_size_count" in line)


def test_server_timeout_maps_to_deadline_exceeded() -> None:
    cfg = settings(grpc_port=free_port(), request_timeout_s=0.001)
    with LiveServer(cfg) as server:
        channel, service = stub(server.grpc_target)
        with channel:
            code, details = _code(
                service.ModelInfer, bytes_request([noise_png(2000)], raw=True), timeout=30
            )
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
            assert "request timeout" in details
            assert service.ServerReady(pb.ServerReadyRequest()).ready


def test_full_queue_is_unavailable() -> None:
    cfg = settings(grpc_port=free_port(), **FULL_QUEUE)
    with LiveServer(cfg) as server:
        statuses = infer_each(server.grpc_target, _images(24))
        with tgrpc.InferenceServerClient(server.grpc_target) as c:
            assert c.is_server_ready()
    assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}, statuses
    assert "OK" in statuses and "StatusCode.UNAVAILABLE" in statuses, statuses


def test_server_stays_healthy(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    tensor = tgrpc.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(_images(1), dtype=object))
    assert client.infer("digits", [tensor], headers=HEADERS).as_numpy("probabilities").shape == (
        1,
        10,
    )
