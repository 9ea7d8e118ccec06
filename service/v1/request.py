"""Parse a TF Serving `:predict` body into one batch: encoded images or a float tensor.

The model's serving signature has two alternative inputs, as on /v2:
`image_bytes` (DT_STRING, one encoded file per row, JSON `{"b64": …}`) and
`image` (DT_FLOAT, N x H x W x C, already preprocessed). TF Serving's two
layouts both work: row form (`"instances"`: one entry per image, either a bare
value or `{"<input>": value}`) and columnar form (`"inputs"`: the whole batch,
either a bare tensor or `{"<input>": tensor}`). Every refusal is a 400 (413 over
the per-request limit) whose message names the offending element.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.bundle import Bundle
from service.errors import BadRequest, InvalidBase64, InvalidJSON, TooManyImages
from service.oip.protocol import BYTES_INPUT, IMAGE_INPUT

SIGNATURE = "serving_default"
INPUTS = (IMAGE_INPUT, BYTES_INPUT)
_FORMS = (
    f'{{"b64": "<base64 file>"}}, {{"{BYTES_INPUT}": {{"b64": "<base64 file>"}}}}, '
    f'an H x W x C list of floats or {{"{IMAGE_INPUT}": <H x W x C list>}}'
)


@dataclass(frozen=True)
class PredictCall:
    """A validated request: exactly one of `images` (encoded files) or `tensor` (NHWC)."""

    columnar: bool  # answer {"outputs": …} rather than {"predictions": …}
    images: list[bytes] | None = None
    tensor: np.ndarray | None = None


def parse_predict(body: bytes, bundle: Bundle, max_images: int) -> PredictCall:
    """The whole `:predict` body, checked against `bundle`; raises BadRequest and friends."""
    doc = _json(body)
    signature = doc.get("signature_name")
    if signature not in (None, "", SIGNATURE):
        raise BadRequest(f"unknown signature_name {signature!r}; this model has only {SIGNATURE!r}")
    if "instances" in doc and "inputs" in doc:
        raise BadRequest('send "instances" (row form) or "inputs" (columnar form), not both')
    if "instances" in doc:
        name, values = _rows(doc["instances"])
        columnar = False
    elif "inputs" in doc:
        name, values = _columns(doc["inputs"])
        columnar = True
    else:
        raise BadRequest('the body needs "instances" (row form) or "inputs" (columnar form)')
    if not values:
        raise BadRequest("the request contains no images")
    if len(values) > max_images:
        raise TooManyImages(
            f"the request has {len(values)} images; the limit is {max_images} per request"
        )
    if name == BYTES_INPUT:
        return PredictCall(columnar, images=[_b64(v, i) for i, v in enumerate(values)])
    return PredictCall(columnar, tensor=_tensor(values, bundle))


def _json(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest('the body must be a JSON object with "instances" or "inputs"')
    return doc


def _kind(value: Any) -> str | None:
    """Which input a bare value feeds: {"b64"} -> image_bytes, a list -> image."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return BYTES_INPUT
    if isinstance(value, list):
        return IMAGE_INPUT
    return None


def _named(value: dict, where: str) -> str:
    """The one input name a `{"<input>": …}` object uses."""
    unknown = sorted(set(value) - set(INPUTS))
    if unknown:
        raise BadRequest(
            f"{where}: unknown input {unknown[0]!r}; the inputs are {IMAGE_INPUT!r} "
            f'(DT_FLOAT, H x W x C) and {BYTES_INPUT!r} (DT_STRING, {{"b64": …}})'
        )
    if len(value) != 1:
        raise BadRequest(f"{where}: send one of {IMAGE_INPUT!r} or {BYTES_INPUT!r}, not both")
    return next(iter(value))


def _rows(instances: Any) -> tuple[str, list]:
    """Row form: one entry per image, all in the same form."""
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list with one entry per image: {_FORMS}')
    name, values = None, []
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        kind, value = _kind(instance), instance
        if kind is None and isinstance(instance, dict):
            kind = _named(instance, where)
            value = instance[kind]
        if kind is None:
            raise BadRequest(f"{where} must be {_FORMS}; got {type(instance).__name__}")
        if name is not None and kind != name:
            raise BadRequest(f"{where} feeds {kind!r} but instances[0] feeds {name!r}")
        name = kind
        values.append(value)
    return name or BYTES_INPUT, values


def _columns(inputs: Any) -> tuple[str, list]:
    """Columnar form: the whole batch as one list, bare or as `{"<input>": […]}`."""
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        name = _named(inputs, '"inputs"')
        values = inputs[name]
    else:
        name, values = None, inputs
    if not isinstance(values, list):
        raise BadRequest(
            '"inputs" must hold the whole batch as a list: [{"b64": …}, …] for '
            f"{BYTES_INPUT!r} or N x H x W x C floats for {IMAGE_INPUT!r}"
        )
    if name is None:
        name = _kind(values[0]) if values else BYTES_INPUT
        if name is None:
            raise BadRequest(
                f'"inputs"[0] must be {{"b64": …}} or an H x W x C list of floats; '
                f"got {type(values[0]).__name__}"
            )
    return name, values


def _b64(value: Any, index: int) -> bytes:
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise BadRequest(
            f'image {index}: {BYTES_INPUT!r} values must be {{"b64": "<base64 file>"}} objects'
        )
    text = "".join(value["b64"].split())  # MIME line breaks, as base64(1) writes them
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # the URL-safe alphabet, which TF Serving accepts as well
        return base64.b64decode(text, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"image {index}: b64 is not valid base64: {exc}") from None


def _tensor(values: list, bundle: Bundle) -> np.ndarray:
    spec = bundle.input
    dims = (spec.height, spec.width, spec.channels)
    wanted = " x ".join(map(str, dims))
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        raise BadRequest(
            f"{IMAGE_INPUT!r}: every image must be a regular {wanted} list of floats"
        ) from None
    if array.dtype.kind not in "iuf":
        raise BadRequest(f"{IMAGE_INPUT!r}: the values must be numbers")
    if array.shape[1:] != dims:
        got = " x ".join(map(str, array.shape[1:])) or "a scalar"
        raise BadRequest(f"{IMAGE_INPUT!r}: each image must be {wanted} (H x W x C), got {got}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        tensor = array.astype(np.float32, copy=False)
    if not np.isfinite(tensor).all():
        raise BadRequest(f"{IMAGE_INPUT!r} contains NaN or infinite values")
    return tensor
