"""How much structure a JSON body may have, counted on its bytes before parsing.

Parsing is where JSON costs memory: every `{}` becomes a ~64-byte dict, every
number a 24-byte float, every element an 8-byte pointer, so 32 MiB of
`[{}, {}, ...]` is over a GiB. Counting `{`, `[` and `,` (C speed, no objects)
bounds the values a parse can create; a request that needs more than the
model could ever take is refused before parsing (413).
"""

from __future__ import annotations

from service.bundle import InputSpec

MARGIN = 1024  # names, shapes, parameters and outputs around the tensor data


def structure(body: bytes | memoryview) -> int:
    """Objects, arrays and separators in `body`: at least the values a parse creates, less one."""
    data = bytes(body) if isinstance(body, memoryview) else body
    return data.count(b"{") + data.count(b"[") + data.count(b",")


def tensor_json_limit(spec: InputSpec, max_images: int) -> int:
    """The most values an inference request's JSON can need: a full batch as numbers."""
    return max_images * spec.height * spec.width * spec.channels + MARGIN


def oip_header_excess(
    body: bytes, header_length: str | None, spec: InputSpec, max_images: int
) -> str | None:
    """Why an Open Inference Protocol body's JSON part is too big to parse, or None."""
    header = body
    if header_length is not None and header_length.isdigit():
        header = body[: int(header_length)]  # the binary tail is raw bytes, not JSON
    count, limit = structure(header), tensor_json_limit(spec, max_images)
    if count > limit:
        return (
            f"the JSON request has {count} objects, arrays and values; a full batch of "
            f"{max_images} inputs needs at most {limit}"
        )
    return None
