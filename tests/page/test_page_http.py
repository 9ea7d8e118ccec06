"""The page, its files, the bundle's pictures and /docs over HTTP (no browser needed).

What a browser would load must come from this server only: every `src` and
`href` is a local path, nothing is inline (the CSP forbids it), and /docs
serves Swagger UI from the installed package instead of a CDN.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.service.serving import DIGITS, LiveServer, settings

STATIC = Path(__file__).resolve().parents[2] / "service" / "static"
TEST_IDS = {"file-input", "model-select", "layer-select", "featuremap", "filters", "heatmap",
            "error"}  # fmt: skip


class Page(HTMLParser):
    """Every URL the document loads, inline code, and the data-testid hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.test_ids: set[str] = set()
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if "style" in values or any(k.startswith("on") for k in values):
            self.inline.append(f"<{tag} {values}>")
        if values.get("data-testid"):
            self.test_ids.add(values["data-testid"])
        self._open = tag if tag in ("script", "style") else None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(f"<{self._open}>{data[:60]}")


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def local(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def test_the_page_is_local_and_its_csp_holds(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert csp.startswith("default-src 'self';") and "'unsafe-inline'" not in csp
        page = parse(r.text)
        assert page.urls and all(local(u) for u in page.urls), page.urls
        assert page.inline == []
        assert page.test_ids >= TEST_IDS
        for url in page.urls:
            if url.startswith("/static/"):
                asset = c.get(url)
                assert asset.status_code == 200, url
                assert asset.headers["content-security-policy"] == csp
                assert asset.content == (STATIC / url.removeprefix("/static/")).read_bytes()


def test_the_script_fetches_nothing_from_elsewhere() -> None:
    script = (STATIC / "app.js").read_text()
    for needle in ("http://", "https://", "innerHTML", "eval(", "new Function"):
        assert needle not in script, needle
    css = (STATIC / "app.css").read_text()
    assert "url(" not in css and "@import" not in css


def test_static_serves_only_its_own_files(server: LiveServer) -> None:
    with server.client() as c:
        for path in ("/static/nope.js", "/static/..%2F__init__.py", "/static/%2e%2e/app.py"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"


def test_pictures_are_listed_and_served(server: LiveServer) -> None:
    with server.client() as c:
        doc = c.get("/models/digits/pictures").json()
        names = [p["name"] for p in doc["pictures"]]
        on_disk = sorted(p.name for p in DIGITS.glob("*.png"))
        assert names == on_disk and "confusion_matrix.png" in names
        assert c.get("/models/digits").json()["pictures"] == names  # listed with the bundle
        for entry in doc["pictures"]:
            r = c.get(entry["url"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content == (DIGITS / entry["name"]).read_bytes()
            Image.open(io.BytesIO(r.content)).verify()


@pytest.mark.parametrize(
    "path",
    [
        "/models/digits/pictures/bundle.json",
        "/models/digits/pictures/model.onnx",
        "/models/digits/pictures/missing.png",
        "/models/digits/pictures/..%2F..%2Fdigits%2F1%2Fconfusion_matrix.png",
        "/models/digits/pictures/%2e%2e",
        "/models/nope/pictures/confusion_matrix.png",
        "/models/digits/pictures/confusion_matrix.png?version=9",
    ],
)
def test_nothing_else_is_reachable(server: LiveServer, path: str) -> None:
    with server.client() as c:
        r = c.get(path)
    assert r.status_code == 404, path
    assert set(r.json()["error"]) == {"code", "message"}


def test_docs_need_nothing_from_outside(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/docs")
        assert r.status_code == 200
        page = parse(r.text)
        assert page.urls and all(local(u) for u in page.urls), page.urls
        assert "cdn" not in r.text.lower() and "https://" not in r.text
        for url in page.urls:
            asset = c.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
        bundle = c.get("/docs/assets/swagger-ui-bundle.js").text
        assert "SwaggerUIBundle" in bundle
        assert c.get("/docs/assets/index.html").status_code == 404
        assert c.get("/openapi.json").json()["paths"]["/explain"]["post"]


def test_with_a_key_the_page_is_public_and_the_data_is_not() -> None:
    with LiveServer(settings(api_key="s3cret")) as live, live.client() as c:
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/docs/assets/swagger-ui.css").status_code == 200
        for path in ("/models/digits/pictures", "/models/digits/pictures/confusion_matrix.png"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.post("/explain", content=b"x", headers={"Content-Type": "image/png"})
        assert r.status_code == 401
