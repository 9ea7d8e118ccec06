"""Keras model -> ONNX (probabilities + every Conv2D/MaxPooling2D activation), verified.

The exported graph takes `image` (float32 NHWC, dynamic batch) and is checked
against Keras with onnxruntime on real data; a difference above the tolerance
refuses the export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.errors import TrainingError

PROBABILITIES = "probabilities"
INPUT_NAME = "image"
FEATURE_KINDS = ("Conv2D", "MaxPooling2D")
TOLERANCE = 1e-4
OPSET = 17


@dataclass
class Exported:
    onnx_bytes: bytes
    output_names: list[str]
    feature_layers: list  # keras layers, in model order
    parity: float
    keras_outputs: list[np.ndarray]


def feature_layers(model) -> list:
    """Every top-level Conv2D / MaxPooling2D layer whose output is an N x H x W x C map."""
    found = []
    for layer in model.layers:
        if type(layer).__name__ in FEATURE_KINDS:
            if len(layer.output.shape) != 4:
                raise TrainingError(
                    f"layer {layer.name}: expected a 4-D output, got {layer.output.shape}"
                )
            found.append(layer)
    if any(layer.name == PROBABILITIES for layer in found):
        raise TrainingError(f"a feature-map layer may not be named {PROBABILITIES!r}")
    return found


def _export_model(model, layers: list):
    import keras

    if len(model.outputs) != 1:
        raise TrainingError(
            f"the model must have one output (the softmax), it has {len(model.outputs)}"
        )
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise TrainingError("the model must have one image input of shape (batch, H, W, C)")
    outputs = [model.outputs[0]] + [layer.output for layer in layers]
    export = keras.Model(model.inputs, outputs, name="convserve_export")  # stable node names
    # Keras 3 + tf2onnx: without output_names, from_keras fails with KeyError 'keras_tensor_N'.
    export.output_names = [PROBABILITIES] + [layer.name for layer in layers]
    return export


def _name_batch_dim(proto) -> None:
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"


def convert(model, sample: np.ndarray, *, tolerance: float = TOLERANCE) -> Exported:
    """Convert with tf2onnx and compare every output with Keras on `sample` (a real batch)."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    layers = feature_layers(model)
    export = _export_model(model, layers)
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    if sample.shape[1:] != (height, width, channels):
        raise TrainingError(
            f"sample batch shape {sample.shape[1:]} != model input {(height, width, channels)}"
        )
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(export, input_signature=signature, opset=OPSET)
    _name_batch_dim(proto)
    onnx_bytes = proto.SerializeToString()

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got_inputs = [i.name for i in session.get_inputs()]
    got_outputs = [o.name for o in session.get_outputs()]
    if got_inputs != [INPUT_NAME] or got_outputs != export.output_names:
        raise TrainingError(
            f"ONNX graph has inputs {got_inputs} / outputs {got_outputs}, expected "
            f"[{INPUT_NAME!r}] / {export.output_names}"
        )
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    keras_outputs = [np.asarray(o) for o in export.predict(sample, verbose=0)]
    onnx_outputs = session.run(None, {INPUT_NAME: sample})
    parity = 0.0
    for name, expected, actual in zip(
        export.output_names, keras_outputs, onnx_outputs, strict=True
    ):
        if expected.shape != actual.shape:
            raise TrainingError(f"output {name}: Keras shape {expected.shape}, ONNX {actual.shape}")
        diff = float(np.max(np.abs(expected.astype(np.float64) - actual)))
        parity = max(parity, diff)
        if not diff <= tolerance:  # also catches NaN
            raise TrainingError(
                f"export refused: output {name!r} differs between Keras and onnxruntime by "
                f"{diff:.3g} (> {tolerance:g}); no bundle written"
            )
    probabilities = keras_outputs[0]
    if (
        probabilities.ndim != 2
        or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
        or (probabilities.min() < 0)
    ):
        raise TrainingError("the model's output is not a softmax over classes (rows must sum to 1)")
    return Exported(onnx_bytes, export.output_names, layers, parity, keras_outputs)
