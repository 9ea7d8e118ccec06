"""Property tests of the /predict body readers (service/routes/inputs.py), on real
Starlette requests: whatever the JSON or multipart body, the answer is images or a
4xx APIError, never another exception; and what a client encodes comes back."""

from __future__ import annotations

import asyncio
import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from service.errors import APIError
from service.routes.inputs import read_images

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_IMAGES = 4


def _read(body: bytes, content_type: str):
    """read_images on a real Starlette Request carrying `body` in two chunks."""
    half = len(body) // 2
    messages = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
        "query_string": b"",
    }
    return asyncio.run(read_images(Request(scope, receive), MAX_IMAGES))


def _answer(body: bytes, content_type: str):
    try:
        return _read(body, content_type)
    except APIError as exc:
        assert 400 <= exc.status < 500, exc
        return None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)
_INSTANCE = st.fixed_dictionaries(
    {"b64": st.text(alphabet="AZaz09+/= \n", max_size=24) | _JSON},
    optional={"filename": _JSON},
)


@SETTINGS
@given(st.fixed_dictionaries({"instances": st.lists(_INSTANCE | _JSON, max_size=6)}) | _JSON)
def test_any_json_body_is_images_or_a_4xx(doc: object) -> None:
    _answer(json.dumps(doc).encode(), "application/json")


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_as_json_are_images_or_a_4xx(body: bytes) -> None:
    _answer(body, "application/json")


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=MAX_IMAGES), st.integers(1, 76))
def test_json_base64_round_trip_with_any_line_wrapping(blobs: list[bytes], width: int) -> None:
    def wrapped(blob: bytes) -> str:
        text = base64.b64encode(blob).decode()
        return "\r\n ".join(text[i : i + width] for i in range(0, len(text), width))

    doc = {"instances": [{"b64": wrapped(b), "filename": f"{i}.png"} for i, b in enumerate(blobs)]}
    assert _read(json.dumps(doc).encode(), "application/json") == (
        blobs,
        [f"{i}.png" for i in range(len(blobs))],
    )


_TOKEN = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=12)


@SETTINGS
@given(
    st.lists(st.tuples(_TOKEN, _TOKEN | st.none(), st.binary(max_size=64)), max_size=6),
    st.sampled_from(["", "preamble\r\n"]),
)
def test_multipart_round_trip_or_a_4xx(parts: list, preamble: str) -> None:
    boundary = "fuzz-boundary"
    body = preamble.encode()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    got = _answer(body, f"multipart/form-data; boundary={boundary}")
    files = [(n, f, d) for n, f, d in parts if f is not None]
    if got is not None and all(n == "file" for n, _, _ in files):
        assert [bytes(b) for b in got[0]] == [d for _, _, d in files]


@SETTINGS
@given(st.binary(max_size=400), _TOKEN)
def test_any_bytes_as_multipart_are_images_or_a_4xx(body: bytes, boundary: str) -> None:
    _answer(body, f"multipart/form-data; boundary={boundary}")


def test_deep_json_is_a_400() -> None:
    # under 64 KiB: parsed right here (larger bodies go to the server's decode pool)
    for body in (b"[" * 60_000, b'{"instances": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"):
        try:
            _read(body, "application/json")
        except APIError as exc:
            assert exc.status in (400, 413, 422)
        else:
            raise AssertionError("accepted")
