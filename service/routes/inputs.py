"""Images out of a request: multipart `file` parts, a raw image/* body, or JSON base64.

The raw body is the cheap path (no parsing at all). Returns the encoded bytes
and a filename per image (None when the request carries no name).

Bounds, whatever the body (docs/api.md, Limits): a multipart body stays in
memory like a raw one (no temporary files: a pod's /tmp is small), its limit
overrun is the same 413; a JSON body with more structure than `max_images`
instances can need is refused before it is parsed (parsing turns each `{}` into
a ~100-byte dict), deep nesting is a 400, and a large one is parsed in the
decode pool, not on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from service import multipart
from service.errors import (
    BadMultipart,
    InvalidBase64,
    InvalidJSON,
    InvalidParameter,
    NoImages,
    TooLarge,
    TooManyImages,
    UnsupportedMediaType,
)

Images = tuple[list[bytes], list[str | None]]
MAX_FIELDS = 100  # ordinary (non-file) multipart fields, as Starlette counts them

# JSON bodies above this are parsed in the decode pool (a thread) instead of on the loop.
OFFLOAD_JSON_BYTES = 64 * 1024
# `{`, `[` and `,` a /predict JSON body may hold per allowed instance (and a margin):
# {"instances": [{"b64": "...", "filename": "..."}, ...]} needs 3 per instance.
_STRUCTURE_PER_IMAGE, _STRUCTURE_MARGIN = 8, 64
_WHITESPACE = dict.fromkeys(map(ord, " \t\r\n\v\f"))


class _InMemoryParser(MultiPartParser):
    """Starlette's parser, with every part held in memory as a raw body is: no part
    spools to the temporary directory (the body limit bounds it anyway)."""

    spool_max_size = 1 << 62


SUPPORTED = (
    "image/* or application/octet-stream (raw body), multipart/form-data (`file` parts) "
    "or application/json (instances)"
)


def _too_many(count: int | str, limit: int) -> TooManyImages:
    return TooManyImages(f"the request has {count} images; the limit is {limit} per request")


def media_type_of(content_type: str) -> str:
    """`image/PNG; x=y` -> `image/png`."""
    return content_type.partition(";")[0].strip().lower()


def is_raw_image(media_type: str) -> bool:
    """A body that is one encoded image, read as it is (no parsing at all)."""
    return media_type.startswith("image/") or media_type == "application/octet-stream"


async def read_images(request: Request, max_images: int) -> Images:
    media_type = media_type_of(request.headers.get("content-type", ""))
    if is_raw_image(media_type):
        return [await request.body()], [None]
    if media_type == "multipart/form-data":
        return await _multipart(request, max_images)
    if media_type == "application/json":
        body = await request.body()
        if len(body) > OFFLOAD_JSON_BYTES:
            return await request.app.state.dataplane.offload(_json, body, max_images)
        return _json(body, max_images)
    shown = media_type or "none"
    raise UnsupportedMediaType(f"Content-Type {shown} is not supported; send {SUPPORTED}")


def _fast_multipart(body: bytes, content_type: str, max_images: int) -> Images | None:
    """The parts of a plain body without Starlette's parser (service/multipart.py); None
    when the body is unusual or over a limit, so that Starlette parses it and says why."""
    parts = multipart.parse(body, content_type, max_parts=max_images + MAX_FIELDS)
    if parts is None:
        return None
    files = [p for p in parts if p.filename is not None]
    if len(files) > max_images or len(parts) - len(files) > MAX_FIELDS:
        return None
    for part in files:
        if part.name != "file":
            raise InvalidParameter(f"unexpected file part {part.name!r}; name image parts 'file'")
    if not files:
        raise NoImages("the multipart body has no `file` parts")
    return [p.data for p in files], [p.filename or None for p in files]


async def _multipart(request: Request, max_images: int) -> Images:
    content_type = request.headers.get("content-type", "")
    fast = _fast_multipart(await request.body(), content_type, max_images)
    if fast is not None:
        return fast
    parser = _InMemoryParser(
        request.headers, request.stream(), max_files=max_images, max_fields=MAX_FIELDS
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise _too_many(f"more than {max_images}", max_images) from None
        raise BadMultipart(f"invalid multipart body: {exc.message}") from None
    except HTTPException as exc:  # the body limit (413), raised while the body streams in
        if exc.status_code == 413:
            raise
        raise BadMultipart(f"invalid multipart body: {exc.detail}") from None
    try:
        blobs, names = [], []
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue  # ordinary form fields are ignored
            if key != "file":
                raise InvalidParameter(
                    f"unexpected file part {key!r}; name image parts 'file'",
                )
            blobs.append(await value.read())  # in memory (below 1 MiB): no thread hop
            names.append(value.filename or None)
    finally:
        await form.close()
    if not blobs:
        raise NoImages("the multipart body has no `file` parts")
    return blobs, names


def _json(body: bytes, max_images: int) -> Images:
    structure = body.count(b"{") + body.count(b"[") + body.count(b",")
    if structure > _STRUCTURE_PER_IMAGE * max_images + _STRUCTURE_MARGIN:
        raise TooLarge(
            f"the JSON body has {structure} objects, arrays and values; {max_images} "
            f'instances of {{"b64": ..., "filename": ...}} need far fewer'
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJSON("the body is not valid JSON: nested too deeply") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidParameter(
            'expected {"instances": [{"b64": "<base64 image>"}, ...]} with at least one instance',
        )
    if len(instances) > max_images:
        raise _too_many(len(instances), max_images)
    blobs, names = [], []
    for i, instance in enumerate(instances):
        b64 = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(b64, str):
            raise InvalidParameter(f'instances[{i}] must be {{"b64": "<base64>"}}')
        try:
            # one copy without whitespace (split() made one string per run of text)
            blobs.append(base64.b64decode(b64.translate(_WHITESPACE), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidBase64(f"instances[{i}].b64 is not valid base64: {exc}") from None
        name = instance.get("filename")
        names.append(name if isinstance(name, str) else None)
    return blobs, names
