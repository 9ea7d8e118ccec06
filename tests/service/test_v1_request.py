"""TF Serving `:predict` bodies -> one batch, on bytes alone (no server)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from service.errors import BadRequest, InvalidBase64, InvalidJSON, TooManyImages
from service.v1.request import parse_predict
from service.v1.response import model_metadata, model_status, predictions_json
from tests.service.oip_support import toy_bundle

BUNDLE = toy_bundle()  # 8 x 8 x 1
PNG = b"\x89PNG fake bytes"
B64 = base64.b64encode(PNG).decode()
PIXELS = np.arange(64, dtype=np.float32).reshape(8, 8, 1) / 64


def parse(doc: object, max_images: int = 8):
    return parse_predict(json.dumps(doc).encode(), BUNDLE, max_images)


@pytest.mark.parametrize(
    ("doc", "columnar"),
    [
        ({"instances": [{"b64": B64}, {"b64": B64}]}, False),
        ({"instances": [{"image_bytes": {"b64": B64}}] * 2}, False),
        ({"signature_name": "serving_default", "instances": [{"b64": B64}] * 2}, False),
        ({"inputs": [{"b64": B64}, {"b64": B64}]}, True),
        ({"inputs": {"image_bytes": [{"b64": B64}, {"b64": B64}]}}, True),
    ],
    ids=["row b64", "row named", "row with signature", "columnar bare", "columnar named"],
)
def test_encoded_image_forms(doc: dict, columnar: bool) -> None:
    call = parse(doc)
    assert call.images == [PNG, PNG] and call.tensor is None and call.columnar is columnar


@pytest.mark.parametrize(
    ("doc", "columnar"),
    [
        ({"instances": [PIXELS.tolist()] * 3}, False),
        ({"instances": [{"image": PIXELS.tolist()}] * 3}, False),
        ({"inputs": [PIXELS.tolist()] * 3}, True),
        ({"inputs": {"image": [PIXELS.tolist()] * 3}}, True),
    ],
    ids=["row bare", "row named", "columnar bare", "columnar named"],
)
def test_preprocessed_tensor_forms(doc: dict, columnar: bool) -> None:
    call = parse(doc)
    assert call.images is None and call.columnar is columnar
    assert call.tensor.dtype == np.float32 and call.tensor.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(call.tensor[2], PIXELS)


def test_url_safe_and_line_wrapped_base64_are_accepted() -> None:
    data = bytes(range(256)) * 3  # has '+' and '/' in standard base64
    safe = base64.urlsafe_b64encode(data).decode()
    wrapped = "\n".join(base64.b64encode(data).decode()[i : i + 76] for i in range(0, 1024, 76))
    assert parse({"instances": [{"b64": safe}, {"b64": wrapped}]}).images == [data, data]


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        ({"instances": [{"b64": B64}], "inputs": [{"b64": B64}]}, BadRequest, "not both"),
        (
            {"signature_name": "predict_images", "instances": [{"b64": B64}]},
            BadRequest,
            "unknown signature_name 'predict_images'",
        ),
        ({}, BadRequest, 'needs "instances"'),
        ({"instances": {"b64": B64}}, BadRequest, "must be a list"),
        ({"instances": []}, BadRequest, "no images"),
        ({"instances": ["aGVsbG8="]}, BadRequest, "instances[0] must be"),
        ({"instances": [{"b64": B64}, PIXELS.tolist()]}, BadRequest, "instances[1] feeds 'image'"),
        (
            {"instances": [{"key": "1", "image_bytes": {"b64": B64}}]},
            BadRequest,
            "unknown input 'key'",
        ),
        (
            {"instances": [{"image": PIXELS.tolist(), "image_bytes": {"b64": B64}}]},
            BadRequest,
            "not both",
        ),
        ({"instances": [{"image_bytes": B64}]}, BadRequest, 'must be {"b64"'),
        ({"instances": [{"b64": "not base64!"}]}, InvalidBase64, "image 0: b64 is not valid"),
        (
            {"instances": [[PIXELS.tolist()]]},
            BadRequest,
            "must be 8 x 8 x 1 (H x W x C), got 1 x 8",
        ),
        ({"instances": [PIXELS.tolist(), PIXELS[:4].tolist()]}, BadRequest, "regular 8 x 8 x 1"),
        ({"instances": [PIXELS[:, :, 0].tolist()]}, BadRequest, "got 8 x 8"),
        ({"inputs": [[PIXELS.tolist()]]}, BadRequest, "got 1 x 8 x 8 x 1"),
        ({"inputs": {"b64": B64}}, BadRequest, "whole batch as a list"),
        ({"inputs": ["x"]}, BadRequest, '"inputs"[0] must be'),
        ({"inputs": {"image": [[["a"] * 1] * 8] * 8}}, BadRequest, "must be numbers"),
        ({"instances": [np.full((8, 8, 1), np.nan).tolist()]}, BadRequest, "NaN"),
        ({"instances": [{"b64": B64}] * 9}, TooManyImages, "the limit is 8"),
        ([1, 2], BadRequest, "JSON object"),
    ],
)
def test_bad_forms(doc: object, error: type, message: str) -> None:
    with pytest.raises(error) as failure:
        parse(doc)
    assert type(failure.value) is error
    assert message in failure.value.message


def test_not_json() -> None:
    with pytest.raises(InvalidJSON):
        parse_predict(b"{instances", BUNDLE, 8)


def test_predictions_keep_float32_bits_and_the_form() -> None:
    probs = np.random.default_rng(0).random((2, 10), dtype=np.float32)
    row = json.loads(predictions_json(probs, columnar=False))
    np.testing.assert_array_equal(np.asarray(row["predictions"], dtype=np.float32), probs)
    assert list(json.loads(predictions_json(probs, columnar=True))) == ["outputs"]


def test_status_and_signature_def() -> None:
    status = model_status("digits", ["1", "2"], ready=True, draining=False)
    assert status["name"] == "digits" and status["ready"] is True
    assert [s["version"] for s in status["model_version_status"]] == ["1", "2"]
    assert status["model_version_status"][0]["status"] == {"error_code": "OK", "error_message": ""}
    assert model_status("d", ["1"], False, True)["model_version_status"][0]["state"] == "UNLOADING"
    meta = model_metadata("digits", "1", BUNDLE)
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    outputs = signature["outputs"]["probabilities"]["tensor_shape"]["dim"]
    assert [d["size"] for d in outputs] == ["-1", "10"]
    assert signature["method_name"] == "tensorflow/serving/predict"
