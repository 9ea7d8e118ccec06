"""TensorFlow Serving / KServe V1 REST against a live server, as their clients send it.

The request forms are the ones of TF Serving's REST API page and its image
tutorials (`requests.post(url, data=json.dumps({...}))` with `{"b64": …}` or
`{"image_bytes": {"b64": …}}`), and KServe's V1 conventions (`{"instances": …}`
in, `{"predictions": …}` out, `{"name", "ready"}` status).
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
import requests

from service.bundle import read_bundle
from service.preprocess import preprocess
from tests.service.serving import DIGITS, LiveServer, distinct_label_images, reference, settings

IMAGES = [data for _, data in distinct_label_images(4)]
B64 = [base64.b64encode(data).decode() for data in IMAGES]


def _pixels() -> list:
    bundle = read_bundle(DIGITS)
    return [
        preprocess(data, bundle.input, bundle.preprocessing, max_pixels=10**8).tolist()
        for data in IMAGES
    ]


FORMS = {
    "row b64": lambda: {"instances": [{"b64": b} for b in B64]},
    "row image_bytes": lambda: {
        "signature_name": "serving_default",
        "instances": [{"image_bytes": {"b64": b}} for b in B64],
    },
    "row floats": lambda: {"instances": _pixels()},
    "row named floats": lambda: {"instances": [{"image": p} for p in _pixels()]},
    "columnar b64": lambda: {"inputs": [{"b64": b} for b in B64]},
    "columnar image_bytes": lambda: {"inputs": {"image_bytes": [{"b64": b} for b in B64]}},
    "columnar floats": lambda: {"inputs": _pixels()},
    "columnar named floats": lambda: {"inputs": {"image": _pixels()}},
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_request_form_answers_onnxruntimes_probabilities(server: LiveServer, form) -> None:
    doc = FORMS[form]()
    answer = requests.post(
        f"{server.url}/v1/models/digits:predict", data=json.dumps(doc), timeout=30
    )
    assert answer.status_code == 200, answer.text
    key = "outputs" if form.startswith("columnar") else "predictions"
    assert list(answer.json()) == [key]
    got = np.asarray(answer.json()[key], dtype=np.float32)
    np.testing.assert_array_equal(got, reference(IMAGES)["probabilities"])


def test_version_in_the_path(client: httpx.Client) -> None:
    answer = client.post("/v1/models/digits/versions/1:predict", json=FORMS["row b64"]())
    assert answer.status_code == 200, answer.text
    assert np.asarray(answer.json()["predictions"]).shape == (4, 10)
    missing = client.post("/v1/models/digits/versions/7:predict", json=FORMS["row b64"]())
    assert missing.status_code == 404
    assert "no version '7'" in missing.json()["error"]


def test_model_status_has_tf_serving_and_kserve_keys(client: httpx.Client) -> None:
    for path in ("/v1/models/digits", "/v1/models/digits/versions/1"):
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "name": "digits",
            "ready": True,
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ],
        }
    assert client.get("/v1/models").json() == {"models": ["digits"]}


def test_metadata_signature_def(client: httpx.Client) -> None:
    for path in ("/v1/models/digits/metadata", "/v1/models/digits/versions/1/metadata"):
        doc = client.get(path).json()
        assert doc["model_spec"]["name"] == "digits" and doc["model_spec"]["version"] == "1"
        signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
        dims = [d["size"] for d in signature["inputs"]["image"]["tensor_shape"]["dim"]]
        assert dims == ["-1", "32", "32", "1"]
        assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"


BAD = {
    "instances and inputs": (
        {"instances": [{"b64": B64[0]}], "inputs": [{"b64": B64[0]}]},
        "not both",
    ),
    "wrong nesting": ({"instances": [[{"b64": B64[0]}]]}, "must be numbers"),
    "bad base64": ({"instances": [{"b64": "%%%"}]}, "not valid base64"),
    "unknown signature": (
        {"signature_name": "classify", "instances": [{"b64": B64[0]}]},
        "signature_name",
    ),
    "not an image": (
        {"instances": [{"b64": base64.b64encode(b"text").decode()}]},
        "cannot identify",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_forms_answer_400_with_tf_serving_error_shape(client: httpx.Client, case) -> None:
    doc, message = BAD[case]
    answer = client.post("/v1/models/digits:predict", json=doc)
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == ["error"] and isinstance(answer.json()["error"], str)
    assert message in answer.json()["error"]


def test_other_errors_keep_the_shape(client: httpx.Client) -> None:
    unknown = client.post("/v1/models/half:predict", json=FORMS["row b64"]())
    assert unknown.status_code == 404 and "no model named 'half'" in unknown.json()["error"]
    verb = client.post("/v1/models/digits:classify", json=FORMS["row b64"]())
    assert verb.status_code == 404 and ":predict" in verb.json()["error"]
    junk = client.post("/v1/models/digits:predict", content=b"{not json")
    assert junk.status_code == 400 and "not valid JSON" in junk.json()["error"]
    many = client.post("/v1/models/digits:predict", json={"instances": [{"b64": B64[0]}] * 65})
    assert many.status_code == 413 and isinstance(many.json()["error"], str)


def test_api_key() -> None:
    with LiveServer(settings(api_key="k")) as live, live.client() as c:
        refused = c.post("/v1/models/digits:predict", json=FORMS["row b64"]())
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        assert c.get("/v1/models/digits").status_code == 401
        ok = c.post(
            "/v1/models/digits:predict", json=FORMS["row b64"](), headers={"X-API-Key": "k"}
        )
        assert ok.status_code == 200, ok.text
