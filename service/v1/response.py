"""TF Serving / KServe V1 answers: model status, metadata (`signature_def`), predictions.

Status carries the keys of both protocols (TF Serving's `model_version_status`,
KServe's `name` and `ready`). Integers in `tensor_shape` are strings, as
TF Serving's proto3 JSON writes int64.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from service.bundle import PROBABILITIES_OUTPUT, Bundle
from service.oip.protocol import BYTES_INPUT, IMAGE_INPUT
from service.v1.request import SIGNATURE

PREDICT_METHOD = "tensorflow/serving/predict"


def model_status(name: str, versions: Sequence[str], ready: bool, draining: bool) -> dict:
    """GET /v1/models/{name}[/versions/{v}]: every version asked about and its state."""
    state = "AVAILABLE" if ready else ("UNLOADING" if draining else "LOADING")
    return {
        "name": name,
        "ready": ready,
        "model_version_status": [
            {
                "version": version,
                "state": state,
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in versions
        ],
    }


def _tensor(name: str, dtype: str, dims: Sequence[int]) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in dims],
            "unknown_rank": False,
        },
        "name": name,
    }


def model_metadata(name: str, version: str, bundle: Bundle) -> dict:
    """GET …/metadata: the `serving_default` signature; its two inputs are alternatives."""
    spec = bundle.input
    signature = {
        "inputs": {
            IMAGE_INPUT: _tensor(
                IMAGE_INPUT, "DT_FLOAT", (-1, spec.height, spec.width, spec.channels)
            ),
            BYTES_INPUT: _tensor(BYTES_INPUT, "DT_STRING", (-1,)),
        },
        "outputs": {
            PROBABILITIES_OUTPUT: _tensor(
                PROBABILITIES_OUTPUT, "DT_FLOAT", (-1, len(bundle.classes))
            )
        },
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


def predictions_json(probabilities: np.ndarray, columnar: bool) -> bytes:
    """`{"predictions": [[p0, …], …]}` (row form) or `{"outputs": …}` (columnar form).

    One output, so TF Serving omits its name; float32 values become the exact
    doubles they are, so a client's float32 cast gives back the same bits.
    """
    key = "outputs" if columnar else "predictions"
    return json.dumps({key: probabilities.tolist()}, separators=(",", ":")).encode()
