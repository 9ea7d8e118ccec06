"""Server and model metadata documents of the v2 protocol, derived from the bundle."""

from __future__ import annotations

from collections.abc import Sequence

from service import __version__
from service.bundle import Bundle
from service.oip.protocol import (
    BYTES,
    BYTES_INPUT,
    EXTENSIONS,
    FP32,
    IMAGE_INPUT,
    PLATFORM,
    PROBABILITIES,
)

SERVER_NAME = "convserve"


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(name: str, bundle: Bundle, versions: Sequence[str]) -> dict:
    """Two alternative inputs (a request sends one); probabilities and every feature map out.

    `name` is the name the model is served under (its directory), which wins
    over bundle.json's own `name`.
    """
    spec = bundle.input
    outputs = [{"name": PROBABILITIES, "datatype": FP32, "shape": [-1, len(bundle.classes)]}]
    outputs += [
        {"name": layer.name, "datatype": FP32, "shape": [-1, *layer.shape]}
        for layer in bundle.feature_maps
    ]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            {
                "name": IMAGE_INPUT,
                "datatype": FP32,
                "shape": [-1, spec.height, spec.width, spec.channels],
            },
            {"name": BYTES_INPUT, "datatype": BYTES, "shape": [-1]},
        ],
        "outputs": outputs,
    }
