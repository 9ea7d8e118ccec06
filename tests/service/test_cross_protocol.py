"""Same answer by every door: one set of images through all five protocols, bitwise equal."""

from __future__ import annotations

import base64

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from tests.service.serving import (
    LiveServer,
    answer_probabilities,
    distinct_label_images,
    free_port,
    reference,
    settings,
)


def test_predict_oip_rest_json_and_binary_oip_grpc_and_v1_give_bitwise_equal_probabilities():
    images = [data for _, data in distinct_label_images(12)]
    b64 = [base64.b64encode(data).decode() for data in images]
    answers: dict[str, np.ndarray] = {}
    with LiveServer(settings(grpc_port=free_port())) as live, live.client() as http:
        files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
        predict = http.post("/predict?top_k=10", files=files)
        assert predict.status_code == 200, predict.text
        answers["/predict"] = answer_probabilities(predict.json())

        tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [len(images)], "data": b64}
        oip_json = http.post("/v2/models/digits/infer", json={"inputs": [tensor]})
        assert oip_json.status_code == 200, oip_json.text
        (output,) = oip_json.json()["outputs"]
        answers["OIP REST JSON"] = np.asarray(output["data"], np.float32).reshape(output["shape"])

        with thttp.InferenceServerClient(live.url.removeprefix("http://")) as client:
            tensor = thttp.InferInput("image_bytes", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
            wanted = thttp.InferRequestedOutput("probabilities", binary_data=True)
            result = client.infer("digits", [tensor], outputs=[wanted])
            answers["OIP REST binary"] = result.as_numpy("probabilities")

        with tgrpc.InferenceServerClient(live.grpc_target) as client:
            tensor = tgrpc.InferInput("image_bytes", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(images, dtype=object))
            answers["OIP gRPC"] = client.infer("digits", [tensor]).as_numpy("probabilities")

        v1 = http.post("/v1/models/digits:predict", json={"instances": [{"b64": b} for b in b64]})
        assert v1.status_code == 200, v1.text
        answers["V1 REST"] = np.asarray(v1.json()["predictions"], np.float32)

    want = reference(images)["probabilities"]
    assert want.dtype == np.float32 and want.shape == (12, 10)
    for door, got in answers.items():
        assert got.dtype == np.float32, door
        # bitwise: the float32 bit patterns, not approximately equal values
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=door)
