"""Bad input gets the right status and the JSON error shape; the server stays healthy."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.imagefiles import bad_images
from tests.service.serving import LiveServer, distinct_label_images, settings

BAD = bad_images()
KEY = "s3cret-key"


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def strict() -> Iterator[LiveServer]:
    """API key, small body limit, few images per request."""
    cfg = settings(api_key=KEY, max_body_bytes=200_000, max_images_per_request=4)
    with LiveServer(cfg) as live:
        yield live


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_upload_corpus(client: httpx.Client, bad) -> None:
    raw = client.post("/predict", content=bad.data, headers={"Content-Type": "image/png"})
    _error(raw, bad.status)
    part = client.post("/predict", files=[("file", (bad.name, bad.data, bad.content_type))])
    _error(part, bad.status)
    fm = client.post(
        "/featuremaps?layer=conv2d_1", content=bad.data, headers={"Content-Type": "image/png"}
    )
    _error(fm, bad.status)


def test_bad_image_in_a_batch_names_it(client: httpx.Client) -> None:
    good = distinct_label_images(1)[0][1]
    files = [
        ("file", ("ok.png", good, "image/png")),
        ("file", ("broken.png", b"nope", "image/png")),
    ]
    error = _error(client.post("/predict", files=files), 400, "invalid_image")
    assert error["message"].startswith("image 1 (broken.png):")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b"hello"), ("application/x-www-form-urlencoded", b"a=1"), (None, b"\x89PNG")],
)
def test_wrong_content_type_is_415(client: httpx.Client, content_type, body) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    _error(client.post("/predict", content=body, headers=headers), 415, "unsupported_media_type")


def test_json_body_errors(client: httpx.Client) -> None:
    def post(body: bytes) -> httpx.Response:
        return client.post("/predict", content=body, headers={"Content-Type": "application/json"})

    _error(post(b"{not json"), 400, "invalid_json")
    _error(post(b'{"instances": []}'), 422)
    _error(post(b'{"instances": [{"image": "x"}]}'), 422)
    _error(post(b"[1, 2]"), 422)
    _error(post(b'{"instances": [{"b64": "!!!not base64!!!"}]}'), 400, "invalid_base64")
    empty = base64.b64encode(b"").decode()
    _error(post(b'{"instances": [{"b64": "%s"}]}' % empty.encode()), 400, "invalid_image")


def test_multipart_without_file_parts(client: httpx.Client) -> None:
    _error(client.post("/predict", data={"note": "no image"}, files=[]), 415)  # urlencoded
    r = client.post("/predict", files=[("picture", ("a.png", b"x", "image/png"))])
    _error(r, 422)


@pytest.mark.parametrize("top_k", ["0", "11", "-1", "x", "2.5"])
def test_bad_top_k_is_422(client: httpx.Client, top_k: str) -> None:
    data = distinct_label_images(1)[0][1]
    r = client.post(f"/predict?top_k={top_k}", content=data, headers={"Content-Type": "image/png"})
    assert "top_k" in _error(r, 422, "invalid_parameter")["message"]


def test_unknown_model_version_layer_are_404(client: httpx.Client) -> None:
    data = distinct_label_images(1)[0][1]
    png = {"Content-Type": "image/png"}
    _error(client.post("/predict?model=cats", content=data, headers=png), 404, "unknown_model")
    _error(client.post("/predict?version=7", content=data, headers=png), 404, "unknown_version")
    _error(client.post("/predict?version=x", content=data, headers=png), 404, "unknown_version")
    _error(client.get("/models/cats"), 404, "unknown_model")
    _error(client.post("/featuremaps?layer=dense", content=data, headers=png), 404, "unknown_layer")
    _error(client.post("/featuremaps", content=data, headers=png), 422, "invalid_parameter")
    r = client.post("/featuremaps?layer=conv2d_1&format=gif", content=data, headers=png)
    _error(r, 422, "invalid_parameter")
    _error(client.get("/models/digits/filters/nope.png"), 404, "unknown_layer")
    _error(client.get("/models/digits/filters/max_pooling2d_1.png"), 404, "no_filters")


def test_featuremaps_takes_one_image(client: httpx.Client) -> None:
    data = distinct_label_images(1)[0][1]
    files = [("file", ("a.png", data, "image/png")), ("file", ("b.png", data, "image/png"))]
    _error(client.post("/featuremaps?layer=conv2d_1", files=files), 422)


def test_framework_errors_use_the_same_shape(client: httpx.Client) -> None:
    _error(client.get("/no/such/path"), 404, "not_found")
    _error(client.get("/predict"), 405, "method_not_allowed")


def test_server_still_healthy_after_the_corpus(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    label, data = distinct_label_images(1)[0]
    r = client.post("/predict", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(label)


# ---- limits and the API key (a stricter server) ---------------------------------


def test_too_many_images_is_413(strict: LiveServer) -> None:
    data = distinct_label_images(1)[0][1]
    auth = {"X-API-Key": KEY}
    with strict.client(headers=auth) as c:
        files = [("file", (f"{i}.png", data, "image/png")) for i in range(5)]
        _error(c.post("/predict", files=files), 413, "too_many_images")
        body = {"instances": [{"b64": base64.b64encode(data).decode()}] * 5}
        _error(c.post("/predict", json=body), 413, "too_many_images")
        assert c.post("/predict", files=files[:4]).status_code == 200


def test_body_over_the_limit_is_413_declared_or_streamed(strict: LiveServer) -> None:
    big = b"\0" * 300_000
    with strict.client(headers={"X-API-Key": KEY}) as c:
        _error(c.post("/predict", content=big, headers={"Content-Type": "image/png"}), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            for _ in range(30):
                yield b"\0" * 10_000

        r = c.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
        _error(r, 413, "body_too_large")
        assert c.get("/healthz").status_code == 200


def test_api_key_required_except_probes_and_metrics(strict: LiveServer) -> None:
    data = distinct_label_images(1)[0][1]
    png = {"Content-Type": "image/png"}
    with strict.client() as c:
        for method, path in [
            ("POST", "/predict"),
            ("GET", "/models"),
            ("GET", "/models/digits"),
            ("POST", "/featuremaps?layer=conv2d_1"),
            ("GET", "/openapi.json"),
            ("GET", "/models/digits/filters/conv2d_1.png"),
        ]:
            r = c.request(method, path, content=data, headers=png)
            _error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer"
            r = c.request(method, path, content=data, headers={**png, "X-API-Key": "wrong"})
            _error(r, 401, "unauthorized")
            r = c.request(
                method, path, content=data, headers={**png, "Authorization": "Bearer nope"}
            )
            _error(r, 401)
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200
        ok = c.post("/predict", content=data, headers={**png, "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert (
            c.post("/predict", content=data, headers={**png, "X-API-Key": KEY}).status_code == 200
        )
        assert c.get("/openapi.json", headers={"X-API-Key": KEY}).json()["paths"]["/predict"]
