"""Building v2 responses and metadata, parsed back with NVIDIA's tritonclient."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient

from service.bundle import Bundle
from service.oip.metadata import model_metadata, server_metadata
from service.oip.protocol import ProtocolError
from service.oip.request import OutputRequest
from service.oip.response import build_infer_response, classify
from tests.service.oip_support import LABELS, toy_bundle


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return toy_bundle()


def _probabilities() -> np.ndarray:
    rows = np.random.default_rng(1).random((2, 10), dtype=np.float32)
    return rows / rows.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("binary", [True, False])
def test_response_parses_in_tritonclient(binary):
    probs = _probabilities()
    fmap = np.random.default_rng(2).random((2, 6, 6, 4), dtype=np.float32)
    response = build_infer_response(
        model_name="digits",
        model_version="1",
        request_id="abc",
        outputs=[
            OutputRequest("probabilities", binary=binary),
            OutputRequest("conv2d", binary=binary),
        ],
        results={"probabilities": probs, "conv2d": fmap},
        labels=LABELS,
    )
    length = response.headers.get("Inference-Header-Content-Length")
    assert (length is not None) == binary
    result = InferenceServerClient.parse_response_body(
        response.body, header_length=None if length is None else int(length)
    )
    assert result.get_response()["id"] == "abc"
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)
    np.testing.assert_array_equal(result.as_numpy("conv2d"), fmap)


@pytest.mark.parametrize("binary", [True, False])
def test_classification_output(binary):
    probs = _probabilities()
    response = build_infer_response(
        model_name="digits",
        model_version="1",
        request_id=None,
        outputs=[OutputRequest("probabilities", binary=binary, classification=3)],
        results={"probabilities": probs},
        labels=LABELS,
    )
    length = response.headers.get("Inference-Header-Content-Length")
    result = InferenceServerClient.parse_response_body(
        response.body, header_length=None if length is None else int(length)
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    for row, strings in zip(probs, top, strict=True):
        expected = np.argsort(-row, kind="stable")[:3]
        parsed = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in strings]
        assert [int(index) for _, index, _ in parsed] == expected.tolist()
        assert [label for _, _, label in parsed] == [LABELS[i] for i in expected]
        np.testing.assert_allclose([float(v) for v, _, _ in parsed], row[expected], atol=1e-6)


def test_classification_count_is_capped_at_classes():
    assert len(classify(_probabilities()[:1], 50, LABELS)) == 10


def test_metadata_documents(bundle):
    assert server_metadata()["extensions"] == [
        "binary_tensor_data",
        "classification",
        "model_repository",
    ]
    meta = model_metadata("digits", bundle, ["1", "2"])
    assert meta["name"] == "digits" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]},
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "conv2d", "datatype": "FP32", "shape": [-1, 6, 6, 4]},
    ]


def test_non_finite_output_needs_binary():
    fmap = np.full((1, 6, 6, 4), np.inf, np.float32)
    kwargs = {"model_name": "m", "model_version": "1", "request_id": None, "labels": LABELS}
    with pytest.raises(ProtocolError, match="binary_data: true"):
        build_infer_response(
            outputs=[OutputRequest("conv2d", binary=False)], results={"conv2d": fmap}, **kwargs
        )
    answer = build_infer_response(
        outputs=[OutputRequest("conv2d", binary=True)], results={"conv2d": fmap}, **kwargs
    )
    result = InferenceServerClient.parse_response_body(
        answer.body, header_length=int(answer.headers["Inference-Header-Content-Length"])
    )
    assert np.isinf(result.as_numpy("conv2d")).all()
