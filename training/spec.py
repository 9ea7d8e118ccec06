"""Architecture description: parse, validate and compute output shapes without TensorFlow.

A spec is a list of layer dicts, read like a Keras Sequential model:

    {"type": "conv2d", "filters": 32, "kernel_size": 3, "strides": 2,
     "padding": "valid", "activation": "relu"}
    {"type": "max_pooling2d", "pool_size": 2, "strides": 2, "padding": "valid"}
    {"type": "flatten"} | {"type": "global_average_pooling2d"}
    {"type": "dense", "units": 64, "activation": "relu"}
    {"type": "dropout", "rate": 0.3}

The softmax head (`probabilities`) is added by the builder. Everything is checked
here, before any training starts, so a spec that cannot work fails in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from training.errors import TrainingError

PADDINGS = ("valid", "same")
ACTIVATIONS = ("relu", "elu", "selu", "gelu", "tanh", "sigmoid", "swish", "linear")
FEATURE_KINDS = {"conv2d": "Conv2D", "max_pooling2d": "MaxPooling2D"}

_ALLOWED_KEYS: dict[str, set[str]] = {
    "conv2d": {"filters", "kernel_size", "strides", "padding", "activation"},
    "max_pooling2d": {"pool_size", "strides", "padding"},
    "flatten": set(),
    "global_average_pooling2d": set(),
    "dense": {"units", "activation"},
    "dropout": {"rate"},
}
_ALIASES = {
    "conv": "conv2d",
    "maxpool": "max_pooling2d",
    "max_pool": "max_pooling2d",
    "maxpooling2d": "max_pooling2d",
    "global_average": "global_average_pooling2d",
    "gap": "global_average_pooling2d",
}
_SPATIAL = ("conv2d", "max_pooling2d")
_REDUCE = ("flatten", "global_average_pooling2d")

# The course's small CNN for 256x256 grayscale images.
DEFAULT_LAYERS: list[dict[str, Any]] = [
    {"type": "conv2d", "filters": 16, "kernel_size": 3, "strides": 2, "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 2},
    {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 2},
    {"type": "flatten"},
]


@dataclass(frozen=True)
class LayerSpec:
    """One validated layer with its predictable name and computed output shape."""

    type: str
    name: str
    output_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_feature_map(self) -> bool:
        return self.type in FEATURE_KINDS


def _pair(value: Any, what: str, where: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TrainingError(f"{where}: {what} must be a positive integer or [h, w], got {value!r}")
    if isinstance(value, int):
        value = [value, value]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TrainingError(f"{where}: {what} must be a positive integer or [h, w], got {value!r}")
    if min(value) < 1:
        raise TrainingError(f"{where}: {what} must be >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def _choice(value: Any, allowed: tuple[str, ...], what: str, where: str) -> str:
    if value not in allowed:
        raise TrainingError(f"{where}: {what} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _positive_int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TrainingError(f"{where}: {what} must be a positive integer, got {value!r}")
    return value


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Keras' spatial output size for a window op (no dilation)."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - window) // stride + 1 if size >= window else 0


def _spatial(raw: dict, kind: str, shape: tuple[int, ...], where: str) -> tuple[dict, tuple]:
    height, width, channels = shape
    padding = _choice(raw.get("padding", "valid"), PADDINGS, "padding", where)
    if kind == "conv2d":
        filters = _positive_int(raw.get("filters"), "filters", where)
        window = _pair(raw.get("kernel_size", 3), "kernel_size", where)
        strides = _pair(raw.get("strides", 1), "strides", where)
        activation = _choice(raw.get("activation", "relu"), ACTIVATIONS, "activation", where)
        params = dict(
            filters=filters,
            kernel_size=list(window),
            strides=list(strides),
            padding=padding,
            activation=activation,
        )
        channels = filters
    else:
        window = _pair(raw.get("pool_size", 2), "pool_size", where)
        strides = _pair(raw.get("strides", list(window)), "strides", where)
        params = dict(pool_size=list(window), strides=list(strides), padding=padding)
    out_h = _out_size(height, window[0], strides[0], padding)
    out_w = _out_size(width, window[1], strides[1], padding)
    if out_h < 1 or out_w < 1:
        raise TrainingError(
            f"{where}: a {window[0]}x{window[1]} window with strides {strides} and "
            f"padding {padding!r} on a {height}x{width} input leaves {out_h}x{out_w}; "
            "the stack shrinks the image below 1x1 (use a larger image, fewer layers, "
            "smaller strides or padding 'same')"
        )
    return params, (out_h, out_w, channels)


def parse_layers(
    raw_layers: Any, input_shape: tuple[int, int, int], num_classes: int | None = None
) -> list[LayerSpec]:
    """Validate a layer list against an input shape (H, W, C) and name every layer.

    Names are `<type>_<n>` counted per type from 1 (conv2d_1, max_pooling2d_1, ...);
    they become ONNX output names and API identifiers, so they must not depend on
    Keras' global name counters.
    """
    if not isinstance(raw_layers, list) or not raw_layers:
        raise TrainingError("architecture: `layers` must be a non-empty list of layer objects")
    if num_classes is not None and num_classes < 2:
        raise TrainingError(f"architecture: need at least 2 classes, got {num_classes}")
    shape: tuple[int, ...] = tuple(input_shape)
    counts: dict[str, int] = {}
    result: list[LayerSpec] = []
    reduced = False
    for index, raw in enumerate(raw_layers, start=1):
        where = f"architecture layer {index}"
        if not isinstance(raw, dict):
            raise TrainingError(f"{where}: must be an object like {{'type': 'conv2d', ...}}")
        kind = str(raw.get("type", "")).lower()
        kind = _ALIASES.get(kind, kind)
        if kind not in _ALLOWED_KEYS:
            raise TrainingError(
                f"{where}: unknown layer type {raw.get('type')!r}; "
                f"expected one of {', '.join(_ALLOWED_KEYS)}"
            )
        unknown = set(raw) - _ALLOWED_KEYS[kind] - {"type"}
        if unknown:
            raise TrainingError(
                f"{where} ({kind}): unknown key(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_ALLOWED_KEYS[kind])) or 'none'}"
            )
        if kind in _SPATIAL and reduced:
            raise TrainingError(f"{where}: {kind} must come before flatten/global pooling")
        if kind in _REDUCE and reduced:
            raise TrainingError(f"{where}: only one flatten/global pooling layer is allowed")
        if kind in ("dense", "dropout") and not reduced:
            raise TrainingError(f"{where}: {kind} must come after flatten/global pooling")
        params: dict[str, Any] = {}
        if kind in _SPATIAL:
            params, shape = _spatial(raw, kind, shape, where)
        elif kind == "flatten":
            shape = (math.prod(shape),)
            reduced = True
        elif kind == "global_average_pooling2d":
            shape = (shape[-1],)
            reduced = True
        elif kind == "dense":
            units = _positive_int(raw.get("units"), "units", where)
            activation = _choice(raw.get("activation", "relu"), ACTIVATIONS, "activation", where)
            params = {"units": units, "activation": activation}
            shape = (units,)
        else:
            rate = raw.get("rate", 0.5)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
                raise TrainingError(f"{where}: dropout rate must be in [0, 1), got {rate!r}")
            params = {"rate": float(rate)}
        counts[kind] = counts.get(kind, 0) + 1
        result.append(LayerSpec(kind, f"{kind}_{counts[kind]}", tuple(shape), params))
    if not reduced:
        raise TrainingError(
            "architecture: the stack must contain a flatten or global_average_pooling2d "
            "layer before the softmax head"
        )
    if not any(layer.type == "conv2d" for layer in result):
        raise TrainingError("architecture: at least one conv2d layer is needed")
    return result


def describe(layers: list[LayerSpec], input_shape: tuple[int, int, int], classes: int) -> str:
    """A one-line-per-layer summary printed before training starts."""
    lines = [f"  {'image':<28} {input_shape}"]
    lines += [f"  {layer.name:<28} {layer.output_shape}" for layer in layers]
    lines.append(f"  {'probabilities (softmax)':<28} ({classes},)")
    return "\n".join(lines)


def parse_layer_flag(text: str) -> dict[str, Any]:
    """`conv2d:filters=32,kernel_size=3x3,strides=2,padding=same` -> a layer dict."""
    kind, _, rest = text.partition(":")
    layer: dict[str, Any] = {"type": kind.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainingError(f"--layer {text!r}: expected key=value, got {item!r}")
        layer[key.strip()] = _flag_value(value.strip())
    return layer


def _flag_value(value: str) -> Any:
    if "x" in value and all(part.isdigit() for part in value.split("x")):
        return [int(part) for part in value.split("x")]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
