"""The v2 endpoints over real HTTP with NVIDIA's tritonclient against the shared test server.

Answers are checked against /predict for the same image files and against
in-process preprocess + onnxruntime; malformed requests go through raw httpx.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.bundle import read_bundle
from service.preprocess import preprocess
from tests.service.serving import (
    DIGITS,
    LiveServer,
    answer_probabilities,
    distinct_label_images,
    reference,
    reference_session,
    settings,
)

BUNDLE = read_bundle(DIGITS)


@pytest.fixture
def tc(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def _tensor(blobs: list[bytes]) -> np.ndarray:
    spec, prep = BUNDLE.input, BUNDLE.preprocessing
    return np.stack([preprocess(b, spec, prep, max_pixels=10**8) for b in blobs])


def _files(images: list[tuple[int, bytes]]) -> list[bytes]:
    return [data for _, data in images]


def _predict_probabilities(client: httpx.Client, blobs: list[bytes]) -> np.ndarray:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(blobs)]
    r = client.post("/predict", params={"top_k": len(BUNDLE.classes)}, files=files)
    assert r.status_code == 200, r.text
    return answer_probabilities(r.json(), BUNDLE.classes)


def test_health_and_readiness(tc: triton.InferenceServerClient, client: httpx.Client) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("digits") and tc.is_model_ready("digits", "1")
    assert not tc.is_model_ready("no-such-model")
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    answer = client.get("/v2/models/digits/ready").json()
    assert answer["name"] == "digits" and answer["ready"] is True


def test_server_and_model_metadata(tc: triton.InferenceServerClient) -> None:
    server = tc.get_server_metadata()
    assert server["name"] == "convserve"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = tc.get_model_metadata("digits")
    assert meta == tc.get_model_metadata("digits", "1") | {"versions": meta["versions"]}
    assert meta["name"] == "digits" and "1" in meta["versions"]
    assert meta["platform"] == "onnxruntime_onnx"
    spec = BUNDLE.input
    assert meta["inputs"] == [
        {
            "name": "image",
            "datatype": "FP32",
            "shape": [-1, spec.height, spec.width, spec.channels],
        },
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
    ]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["probabilities"]["shape"] == [-1, len(BUNDLE.classes)]
    assert len(outputs) == 1 + len(BUNDLE.feature_maps)
    for layer in BUNDLE.feature_maps:
        assert outputs[layer.name] == {
            "name": layer.name,
            "datatype": "FP32",
            "shape": [-1, *layer.shape],
        }
    with pytest.raises(InferenceServerException, match="no model named") as caught:
        tc.get_model_metadata("no-such-model")
    assert caught.value.status() == "404"


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_fp32_input_binary_and_json(
    tc: triton.InferenceServerClient, client: httpx.Client, compression: str | None
) -> None:
    images = distinct_label_images(6)
    tensor = _tensor(_files(images))
    answers = {}
    for binary in (True, False):
        given = triton.InferInput("image", list(tensor.shape), "FP32")
        given.set_data_from_numpy(tensor, binary_data=binary)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
        result = tc.infer(
            "digits", [given], outputs=wanted, request_compression_algorithm=compression
        )
        answers[binary] = result.as_numpy("probabilities")
        assert answers[binary].dtype == np.float32
        assert answers[binary].shape == (6, len(BUNDLE.classes))
    np.testing.assert_array_equal(answers[True], answers[False])
    (expected,) = reference_session().run(["probabilities"], {"image": tensor})
    np.testing.assert_allclose(answers[True], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        answers[True], _predict_probabilities(client, _files(images)), rtol=0, atol=1e-6
    )
    assert answers[True].argmax(axis=1).tolist() == [label for label, _ in images]


def test_bytes_images_equal_predict(tc: triton.InferenceServerClient, client: httpx.Client) -> None:
    images = distinct_label_images(10)
    blobs = _files(images)
    binary = triton.InferInput("image_bytes", [len(blobs)], "BYTES")
    binary.set_data_from_numpy(np.array(blobs, dtype=object))
    # JSON form: tritonclient sends BYTES as text, so the files travel base64-encoded
    text = triton.InferInput("image_bytes", [len(blobs)], "BYTES")
    text.set_data_from_numpy(
        np.array([base64.b64encode(b) for b in blobs], dtype=object), binary_data=False
    )
    from_binary = tc.infer("digits", [binary]).as_numpy("probabilities")
    from_json = tc.infer(
        "digits", [text], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)]
    ).as_numpy("probabilities")
    np.testing.assert_array_equal(from_binary, from_json)
    np.testing.assert_allclose(
        from_binary, _predict_probabilities(client, blobs), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(from_binary, reference(blobs)["probabilities"], rtol=0, atol=1e-6)
    assert from_binary.argmax(axis=1).tolist() == [label for label, _ in images]


@pytest.mark.parametrize("binary", [True, False])
def test_classification_output(tc: triton.InferenceServerClient, binary: bool) -> None:
    images = distinct_label_images(4)
    given = triton.InferInput("image_bytes", [4], "BYTES")
    given.set_data_from_numpy(np.array(_files(images), dtype=object))
    wanted = [
        triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3),
    ]
    top = tc.infer("digits", [given], outputs=wanted).as_numpy("probabilities")
    assert top.shape == (4, 3)
    probabilities = reference(_files(images))["probabilities"]
    for (label, _), row, strings in zip(images, probabilities, top, strict=True):
        parsed = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in strings]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == np.argsort(-row, kind="stable")[:3].tolist()
        assert parsed[0][2] == BUNDLE.classes[label]
        scores = [float(score) for score, _, _ in parsed]
        np.testing.assert_allclose(scores, row[indices], atol=1e-6)


def test_feature_map_outputs(tc: triton.InferenceServerClient) -> None:
    images = distinct_label_images(2)
    blobs = _files(images)
    layers = [BUNDLE.feature_maps[0].name, BUNDLE.feature_maps[-1].name]
    given = triton.InferInput("image_bytes", [2], "BYTES")
    given.set_data_from_numpy(np.array(blobs, dtype=object))
    wanted = [triton.InferRequestedOutput(layers[0])]
    wanted += [triton.InferRequestedOutput(layers[1], binary_data=False)]
    wanted += [triton.InferRequestedOutput("probabilities")]
    result = tc.infer("digits", [given], outputs=wanted, request_id="fm-1", model_version="1")
    response = result.get_response()
    assert response["id"] == "fm-1" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == [*layers, "probabilities"]
    expected = reference(blobs, [*layers, "probabilities"])
    for name in [*layers, "probabilities"]:
        got = result.as_numpy(name)
        assert got.shape == expected[name].shape
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-5)
    assert result.as_numpy(layers[0]).shape[1:] == tuple(BUNDLE.feature_maps[0].shape)


def _fp32_header(shape: list[int], **extra: object) -> dict:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": "FP32", **extra}]}


def _binary_body(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + tail, {"Inference-Header-Content-Length": str(len(text))}


SPEC = [BUNDLE.input.height, BUNDLE.input.width, BUNDLE.input.channels]
PIXELS = int(np.prod(SPEC))


def _malformed() -> list:
    zeros = np.zeros(PIXELS, np.float32).tobytes()
    good = _fp32_header([1, *SPEC], parameters={"binary_data_size": len(zeros)})
    wrong_type = {
        "inputs": [
            {"name": "image", "shape": [1, *SPEC], "datatype": "INT32", "data": [0] * PIXELS}
        ]
    }
    wrong_shape = _fp32_header(
        [1, SPEC[0] + 1, *SPEC[1:]], data=[0.0] * (PIXELS + PIXELS // SPEC[0])
    )
    unknown_output = {
        **_fp32_header([1, *SPEC], data=[0.0] * PIXELS),
        "outputs": [{"name": "nope"}],
    }
    text = json.dumps(good).encode()
    not_image = {
        "inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]
    }
    return [
        ("wrong datatype", "digits", json.dumps(wrong_type).encode(), {}, 400, "must be FP32"),
        ("wrong shape", "digits", json.dumps(wrong_shape).encode(), {}, 400, "must have shape"),
        (
            "header longer than body",
            "digits",
            text + zeros,
            {"Inference-Header-Content-Length": str(len(text) + len(zeros) + 1)},
            400,
            "body has only",
        ),
        (
            "binary shorter than declared",
            "digits",
            *_binary_body(good, zeros[:-4]),
            400,
            "declares",
        ),
        (
            "unknown output",
            "digits",
            json.dumps(unknown_output).encode(),
            {},
            400,
            "unknown output",
        ),
        ("not JSON", "digits", b"\x89PNG\r\n", {}, 400, "invalid inference request"),
        ("not an image", "digits", json.dumps(not_image).encode(), {}, 400, "not an image"),
        ("unknown model", "no-such-model", *_binary_body(good, zeros), 404, "no model named"),
    ]


@pytest.mark.parametrize(
    ("model", "body", "headers", "status", "fragment"),
    [case[1:] for case in _malformed()],
    ids=[case[0] for case in _malformed()],
)
def test_malformed_requests_get_clear_errors(
    client: httpx.Client, model: str, body: bytes, headers: dict, status: int, fragment: str
) -> None:
    r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and fragment in error
    assert client.get("/v2/health/ready").status_code == 200


def test_server_still_serves_after_bad_requests(tc: triton.InferenceServerClient) -> None:
    label, data = distinct_label_images(1)[0]
    given = triton.InferInput("image_bytes", [1], "BYTES")
    given.set_data_from_numpy(np.array([data], dtype=object))
    assert tc.infer("digits", [given]).as_numpy("probabilities").argmax() == label


def test_api_key_and_batch_limit_apply() -> None:
    with LiveServer(settings(api_key="s3cret", max_images_per_request=2)) as live:
        tc = triton.InferenceServerClient(live.url.removeprefix("http://"))
        try:
            blobs = _files(distinct_label_images(3))
            given = triton.InferInput("image_bytes", [2], "BYTES")
            given.set_data_from_numpy(np.array(blobs[:2], dtype=object))
            with pytest.raises(InferenceServerException) as caught:
                tc.infer("digits", [given])
            assert caught.value.status() == "401"
            assert tc.is_server_live()  # probes carry no key
            key = {"X-API-Key": "s3cret"}
            assert tc.get_model_metadata("digits", headers=key)["name"] == "digits"
            assert tc.infer("digits", [given], headers=key).as_numpy("probabilities").shape[0] == 2
            too_many = triton.InferInput("image_bytes", [3], "BYTES")
            too_many.set_data_from_numpy(np.array(blobs, dtype=object))
            with pytest.raises(InferenceServerException, match="limit") as caught:
                tc.infer("digits", [too_many], headers=key)
            assert caught.value.status() == "413"
        finally:
            tc.close()


def test_every_path_of_the_oip_rest_document_answers_as_documented(client: httpx.Client) -> None:
    """KServe's open_inference_rest.yaml: each path, no redirect, the required fields."""
    for path in ("/v2/", "/v2"):  # the document writes `/v2/`; Triton's clients ask for `/v2`
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 200, (path, r.status_code, r.headers.get("location"))
        assert {"name", "version", "extensions"} <= set(r.json())
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    for path in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        meta = client.get(path, follow_redirects=False).json()
        assert {"name", "platform", "versions", "inputs", "outputs"} <= set(meta), path
        for tensor in meta["inputs"] + meta["outputs"]:
            assert {"name", "datatype", "shape"} <= set(tensor)
    for path in ("/v2/models/digits/ready", "/v2/models/digits/versions/1/ready"):
        assert client.get(path, follow_redirects=False).status_code == 200, path
    data = base64.b64encode(distinct_label_images(1)[0][1]).decode()
    request = {
        "inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [data]}]
    }
    for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"):
        r = client.post(path, json=request, follow_redirects=False)
        assert r.status_code == 200, (path, r.text)
        answer = r.json()
        assert {"model_name", "outputs"} <= set(answer)
        for output in answer["outputs"]:
            assert {"name", "shape", "datatype", "data"} <= set(output)
