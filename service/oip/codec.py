"""Byte-level codecs of the binary tensor data extension and of request compression.

Binary form: the body is a JSON header of `Inference-Header-Content-Length`
bytes followed by each tensor's raw bytes, in input order, each sized by its
`binary_data_size` parameter. FP32 is little-endian IEEE; a BYTES element is a
4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from service.oip.protocol import HEADER_LENGTH, ProtocolError

_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """Split a request body into its JSON header and the binary tail (empty for pure JSON)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(
            400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}"
        ) from None
    if length < 0:
        raise ProtocolError(400, f"{HEADER_LENGTH} must not be negative, got {length}")
    if length > len(body):
        raise ProtocolError(
            400, f"{HEADER_LENGTH} is {length} but the body has only {len(body)} bytes"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo the `Content-Encoding` tritonclient may apply (gzip, deflate), capped at `limit`."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    kind = encoding.strip().lower()
    if kind == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif kind == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise ProtocolError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"body is not valid {kind} data: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(413, f"decompressed body exceeds the {limit}-byte limit")
    if not inflater.eof:
        raise ProtocolError(400, f"body is truncated {kind} data")
    return out


def decode_bytes_tensor(raw: memoryview, count: int, name: str) -> list[bytes]:
    """Read `count` length-prefixed elements that must fill `raw` exactly."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    for index in range(count):
        if offset + 4 > end:
            raise ProtocolError(
                400, f"input {name!r}: binary data ends before element {index} of {count}"
            )
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > end:
            raise ProtocolError(
                400,
                f"input {name!r}: element {index} declares {size} bytes "
                f"but only {end - offset} remain",
            )
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    if offset != end:
        raise ProtocolError(
            400, f"input {name!r}: {end - offset} bytes left over after {count} elements"
        )
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """Length-prefix and concatenate elements, the BYTES layout of the binary extension."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
