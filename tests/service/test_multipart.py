"""The multipart fast path agrees with Starlette's parser, or steps aside (None) for it."""

from __future__ import annotations

import asyncio

import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service import multipart
from tests.service.serving import LiveServer, digit_images, settings

CTYPE = "multipart/form-data; boundary=XyZ"


def body(*parts: bytes, close: bytes = b"--XyZ--\r\n") -> bytes:
    return b"".join(b"--XyZ\r\n" + p + b"\r\n" for p in parts) + close


def file_part(name: str, filename: str, data: bytes, ctype: str = "image/png") -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    return (head + f"Content-Type: {ctype}\r\n\r\n").encode() + data


def starlette_parts(raw: bytes, ctype: str) -> list[tuple[str, str | None, bytes]]:
    async def run() -> list[tuple[str, str | None, bytes]]:
        chunks = [raw]

        async def receive() -> dict:
            return {"type": "http.request", "body": chunks.pop() if chunks else b"",
                    "more_body": False}  # fmt: skip

        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
                 "headers": [(b"content-type", ctype.encode())]}  # fmt: skip
        form = await Request(scope, receive).form()
        out = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                out.append((key, value.filename, await value.read()))
            else:
                out.append((key, None, value.encode()))
        await form.close()
        return out

    return asyncio.run(run())


CASES = {
    "files": body(file_part("file", "a.png", b"\x89PNG\r\n--Xy\r\n\x00"),
                  file_part("file", "b c.jpg", b"")),
    "field and file": body(b'Content-Disposition: form-data; name="note"\r\n\r\nhello',
                           file_part("file", "x.png", b"data")),
    "unquoted and case": body(b"content-disposition: Form-Data; Name=file; FILENAME=u.png"
                              b"\r\n\r\nxy"),
    "empty filename": body(file_part("file", "", b"zz")),
    "epilogue": body(file_part("file", "a", b"1"), close=b"--XyZ--\r\nignored epilogue"),
}  # fmt: skip


@pytest.mark.parametrize("raw", CASES.values(), ids=CASES.keys())
def test_same_parts_as_starlette(raw: bytes) -> None:
    fast = multipart.parse(raw, CTYPE, max_parts=10)
    assert fast is not None
    assert [(p.name, p.filename, bytes(p.data)) for p in fast] == starlette_parts(raw, CTYPE)


UNUSUAL = {
    "preamble": b"preamble\r\n" + body(file_part("file", "a", b"1")),
    "no closing delimiter": b"--XyZ\r\n" + file_part("file", "a", b"1"),
    "escaped quote": body(b'Content-Disposition: form-data; name="file"; filename="a\\"b"'
                          b"\r\n\r\n1"),
    "boundary text in data": body(file_part("file", "a", b"1\r\n--XyZnot-a-delimiter")),
    "rfc 2231 name": body(b"Content-Disposition: form-data; name=file; filename*=UTF-8''%e2.png"
                          b"\r\n\r\n1"),
    "transfer encoding": body(file_part("file", "a", b"MQ==") .replace(
        b"Content-Type", b"Content-Transfer-Encoding: base64\r\nContent-Type")),
    "no disposition": body(b"Content-Type: image/png\r\n\r\n1"),
    "no headers": body(b"\r\n1"),
    "other boundary": body(file_part("file", "a", b"1")).replace(b"XyZ", b"Abc"),
    "too many parts": body(*[file_part("file", str(i), b"1") for i in range(11)]),
}  # fmt: skip


@pytest.mark.parametrize("raw", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_unusual_bodies_go_to_the_full_parser(raw: bytes) -> None:
    assert multipart.parse(raw, CTYPE, max_parts=10) is None


@pytest.mark.parametrize(
    ("ctype", "expected"),
    [(CTYPE, b"XyZ"), ('multipart/form-data; charset=utf-8; boundary="a b"', b"a b"),
     ("multipart/form-data", None), ("multipart/form-data; boundary=" + "x" * 71, None)],
)  # fmt: skip
def test_boundary_parameter(ctype: str, expected: bytes | None) -> None:
    assert multipart.boundary_of(ctype) == expected


def test_fast_and_full_parser_answer_alike_over_http() -> None:
    images = [data for _, data in digit_images()[:3]]
    plain = body(*[file_part("file", f"{i}.png", d) for i, d in enumerate(images)])
    wrong = body(file_part("image", "a.png", images[0]))
    too_many = body(*[file_part("file", f"{i}.png", images[0]) for i in range(3)])

    def via_starlette(raw: bytes) -> bytes:  # a header the fast path leaves to Starlette's parser
        return raw.replace(b"Content-Type:", b"Content-Transfer-Encoding: binary\r\nContent-Type:")

    unusual = via_starlette(plain)
    assert multipart.parse(unusual, CTYPE, 10) is None
    headers = {"Content-Type": CTYPE}
    with LiveServer() as live, live.client() as c:
        fast, full = (c.post("/predict", content=b, headers=headers) for b in (plain, unusual))
        bad = [
            c.post("/predict", content=w, headers=headers) for w in (wrong, via_starlette(wrong))
        ]
    with LiveServer(settings(max_images_per_request=2)) as live, live.client() as c:
        over = [c.post("/predict", content=b, headers=headers)
                for b in (too_many, via_starlette(too_many))]  # fmt: skip
    assert fast.status_code == full.status_code == 200
    assert fast.json()["predictions"] == full.json()["predictions"]
    assert [p["filename"] for p in fast.json()["predictions"]] == ["0.png", "1.png", "2.png"]
    assert [r.status_code for r in bad] == [422, 422] and bad[0].json() == bad[1].json()
    assert over[0].status_code == over[1].status_code == 413
    assert over[0].json() == over[1].json()
