"""Property tests of the Open Inference Protocol's byte-level codecs and request parser:
whatever the bytes, the answer is a value or a ProtocolError (a 4xx), never another
exception (a 500); and what the encoders write, the decoders read back."""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.oip.codec import decode_bytes_tensor, decompress, encode_bytes_tensor, split_body
from service.oip.protocol import ProtocolError
from service.oip.request import parse_infer
from tests.service.oip_support import toy_bundle

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUNDLE = toy_bundle()


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_bytes_tensor_round_trip(items: list[bytes]) -> None:
    raw = memoryview(encode_bytes_tensor(items))
    assert decode_bytes_tensor(raw, len(items), "x") == items


@SETTINGS
@given(st.binary(max_size=256), st.integers(min_value=0, max_value=64))
def test_bytes_tensor_of_any_bytes_is_a_value_or_a_protocol_error(raw: bytes, count: int) -> None:
    try:
        items = decode_bytes_tensor(memoryview(raw), count, "x")
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
    else:
        assert len(items) == count
        assert encode_bytes_tensor(items) == raw


@SETTINGS
@given(st.binary(max_size=256), st.one_of(st.none(), st.text(max_size=12)))
def test_split_body_is_a_split_or_a_protocol_error(body: bytes, length: str | None) -> None:
    try:
        header, tail = split_body(body, length)
    except ProtocolError as exc:
        assert exc.status == 400
    else:
        assert header + bytes(tail) == body


@SETTINGS
@given(st.binary(max_size=2048), st.sampled_from(["gzip", "deflate"]))
def test_decompress_round_trip_and_cap(data: bytes, kind: str) -> None:
    packed = gzip.compress(data) if kind == "gzip" else zlib.compress(data)
    assert decompress(packed, kind, limit=len(data)) == data
    if data:
        try:
            decompress(packed, kind, limit=len(data) - 1)
        except ProtocolError as exc:
            assert exc.status == 413
        else:
            raise AssertionError("inflated past the limit")


@SETTINGS
@given(st.binary(max_size=512), st.sampled_from(["gzip", "deflate", "br", " GZIP ", "identity"]))
def test_decompress_of_any_bytes_is_bounded_or_a_protocol_error(body: bytes, kind: str) -> None:
    try:
        out = decompress(body, kind, limit=4096)
    except ProtocolError as exc:
        assert exc.status in (400, 413, 415)
    else:
        assert len(out) <= max(4096, len(body))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_INPUT = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "image_bytes", "x"]),
        "shape": st.lists(st.integers(min_value=-2, max_value=40), max_size=5),
        "datatype": st.sampled_from(["FP32", "BYTES", "INT8", "fp32", ""]),
    },
    optional={"data": _JSON, "parameters": st.dictionaries(st.text(max_size=12), _JSON)},
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": st.lists(_INPUT, max_size=2)},
    optional={
        "id": _JSON,
        "outputs": st.lists(st.dictionaries(st.sampled_from(["name", "parameters"]), _JSON)),
        "parameters": st.dictionaries(st.text(max_size=12), _JSON),
    },
)


def _parse(body: bytes, header_length: str | None = None) -> None:
    try:
        parse_infer(body, header_length, BUNDLE, max_batch=8)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500, exc


@SETTINGS
@given(_REQUEST | _JSON)
def test_any_json_request_is_parsed_or_refused_with_a_4xx(doc: object) -> None:
    _parse(json.dumps(doc).encode())


@SETTINGS
@given(_REQUEST, st.binary(max_size=128))
def test_any_binary_request_is_parsed_or_refused_with_a_4xx(doc: dict, tail: bytes) -> None:
    header = json.dumps(doc).encode()
    _parse(header + tail, str(len(header)))


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes_are_parsed_or_refused_with_a_4xx(body: bytes) -> None:
    _parse(body)


def test_deep_nesting_is_a_4xx() -> None:
    _parse(b"[" * 100_000)
    _parse(b'{"inputs": ' + b"[" * 100_000)
