"""POST /predict over real HTTP equals preprocess + onnxruntime in process, in every input form."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from tests.service.serving import answer_probabilities, distinct_label_images, reference


def test_raw_body_equals_in_process_onnxruntime(client: httpx.Client) -> None:
    label, data = distinct_label_images(1)[0]
    r = client.post("/predict?top_k=10", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == {"name": "digits", "version": "1"}
    (prediction,) = answer["predictions"]
    assert prediction["filename"] is None
    expected = reference([data])["probabilities"]
    np.testing.assert_array_equal(answer_probabilities(answer), expected)
    assert prediction["label"] == str(label) == str(int(expected.argmax()))
    assert prediction["probability"] == prediction["top_k"][0]["probability"]
    probs = [e["probability"] for e in prediction["top_k"]]
    assert probs == sorted(probs, reverse=True)


def test_multipart_batch_keeps_request_order_and_filenames(client: httpx.Client) -> None:
    images = distinct_label_images(10)
    files = [("file", (f"digit-{i}.png", data, "image/png")) for i, (_, data) in enumerate(images)]
    r = client.post("/predict", params={"top_k": 10}, files=files)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [p["filename"] for p in answer["predictions"]] == [f"digit-{i}.png" for i in range(10)]
    assert [p["label"] for p in answer["predictions"]] == [str(label) for label, _ in images]
    expected = reference([data for _, data in images])["probabilities"]
    np.testing.assert_allclose(answer_probabilities(answer), expected, rtol=0, atol=1e-6)


def test_json_base64_instances(client: httpx.Client) -> None:
    images = distinct_label_images(3)
    body = {"instances": [{"b64": base64.b64encode(d).decode()} for _, d in images]}
    r = client.post("/predict?top_k=10", json=body)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["filename"] for p in predictions] == [None, None, None]
    expected = reference([d for _, d in images])["probabilities"]
    np.testing.assert_allclose(answer_probabilities(r.json()), expected, rtol=0, atol=1e-6)


def test_a_json_filename_with_a_lone_surrogate_is_answered(client: httpx.Client) -> None:
    """JSON may escape a lone surrogate; the answer must still be written (it was a 500)."""
    _, data = distinct_label_images(1)[0]
    instance = {"b64": base64.b64encode(data).decode(), "filename": "x\ud800.png"}
    body = json.dumps({"instances": [instance]})  # ASCII: the surrogate as the escape \ud800
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["filename"] == "x\ufffd\ufffd\ufffd.png"


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_length(client: httpx.Client, k: int) -> None:
    _, data = distinct_label_images(1)[0]
    r = client.post(f"/predict?top_k={k}", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    assert len(r.json()["predictions"][0]["top_k"]) == k


def test_default_top_k_and_explicit_model_version(client: httpx.Client) -> None:
    _, data = distinct_label_images(1)[0]
    r = client.post(
        "/predict?model=digits&version=1", content=data, headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 200
    assert r.json()["model"] == {"name": "digits", "version": "1"}
    assert len(r.json()["predictions"][0]["top_k"]) == 5


def test_request_larger_than_max_batch_is_split_and_reassembled(client: httpx.Client) -> None:
    # the shared server's max batch is 32: 40 images run as two batches, answered in order
    images = distinct_label_images(40)
    files = [("file", (f"{i}.png", d, "image/png")) for i, (_, d) in enumerate(images)]
    r = client.post("/predict?top_k=10", files=files)
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == [str(lbl) for lbl, _ in images]
    expected = reference([d for _, d in images])["probabilities"]
    np.testing.assert_allclose(answer_probabilities(r.json()), expected, rtol=0, atol=1e-6)


def test_tiny_inline_and_pooled_decodes_agree(client: httpx.Client) -> None:
    """A 32x32 PNG is decoded on the event loop, a 200x200 one in the pool: same numbers."""
    import io

    from PIL import Image

    _, small = distinct_label_images(1)[0]
    big = io.BytesIO()
    Image.open(io.BytesIO(small)).resize((200, 200), Image.Resampling.NEAREST).save(big, "PNG")
    for data in (small, big.getvalue()):
        r = client.post("/predict?top_k=10", content=data, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        expected = reference([data])["probabilities"]
        np.testing.assert_array_equal(answer_probabilities(r.json()), expected)
