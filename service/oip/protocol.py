"""Names, datatypes and the error type shared by the v2 protocol modules."""

from __future__ import annotations

from service.bundle import INPUT_NAME, PROBABILITIES_OUTPUT

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "classification", "model_repository")
PLATFORM = "onnxruntime_onnx"

IMAGE_INPUT = INPUT_NAME  # FP32 NHWC, already preprocessed
BYTES_INPUT = "image_bytes"  # BYTES [N], encoded image files
PROBABILITIES = PROBABILITIES_OUTPUT

FP32 = "FP32"
BYTES = "BYTES"


class ProtocolError(Exception):
    """A request the protocol layer refuses; `status` is the HTTP status to answer with.

    Kept apart from the server's APIError so these modules stay importable and
    testable without the server core.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
