"""Feature-map and filter pictures: real PNGs with the expected grid, and JSON = onnxruntime."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from service.visualize import (
    SEPARATOR,
    SEPARATOR_VALUE,
    feature_map_png,
    filters_png_size,
    grid_shape,
    grid_size,
    tile_scale,
)
from tests.service.serving import DIGITS, distinct_label_images, reference

PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def layers(server) -> list[dict]:
    with server.client() as c:
        return c.get("/models/digits").json()["feature_maps"]


def test_grid_shape_rules() -> None:
    assert grid_shape(16) == (4, 4)
    assert grid_shape(32) == (6, 6)
    assert grid_shape(10) == (3, 4)
    assert grid_shape(1) == (1, 1)


def test_every_layer_png_has_the_expected_grid(client: httpx.Client, layers: list[dict]) -> None:
    _, data = distinct_label_images(1)[0]
    assert {spec["kind"] for spec in layers} >= {"Conv2D", "MaxPooling2D"}
    for spec in layers:
        r = client.post(f"/featuremaps?layer={spec['name']}&format=png", content=data, headers=PNG)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(r.content))
        picture.load()
        h, w, c = spec["shape"]
        assert picture.size == grid_size(c, h, w), spec
        _, cols = grid_shape(c)
        tile = h * tile_scale(h, w)
        assert picture.size[0] == cols * tile + (cols - 1) * SEPARATOR
        pixels = np.asarray(picture)
        assert (pixels[:, tile : tile + SEPARATOR] == SEPARATOR_VALUE).all()  # first separator


def test_each_tile_spans_its_own_min_max(client: httpx.Client) -> None:
    _, data = distinct_label_images(1)[0]
    r = client.post("/featuremaps?layer=conv2d_1", content=data, headers=PNG)
    pixels = np.asarray(Image.open(io.BytesIO(r.content)))
    activation = reference([data], ["conv2d_1"])["conv2d_1"][0]
    h, w, c = activation.shape
    scale = tile_scale(h, w)
    _, cols = grid_shape(c)
    for ch in range(c):
        r_, c_ = divmod(ch, cols)
        y, x = r_ * (h * scale + SEPARATOR), c_ * (w * scale + SEPARATOR)
        tile = pixels[y : y + h * scale, x : x + w * scale]
        act = activation[..., ch]
        if act.max() > act.min():
            assert tile.min() == 0 and tile.max() == 255  # dark = low, own scale
            # the brightest pixel is where the activation is largest
            iy, ix = np.unravel_index(act.argmax(), act.shape)
            assert tile[iy * scale, ix * scale] == 255
        else:
            assert (tile == 0).all()


def test_json_format_equals_onnxruntime(client: httpx.Client, layers: list[dict]) -> None:
    _, data = distinct_label_images(1)[0]
    for spec in layers:
        r = client.post(f"/featuremaps?layer={spec['name']}&format=json", content=data, headers=PNG)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["layer"] == spec["name"] and doc["kind"] == spec["kind"]
        assert doc["shape"] == spec["shape"]
        expected = reference([data], [spec["name"]])[spec["name"]][0]
        np.testing.assert_allclose(np.array(doc["values"], dtype=np.float32), expected, atol=1e-6)


def test_filter_pngs_for_every_conv_layer(client: httpx.Client, layers: list[dict]) -> None:
    kernels = np.load(DIGITS / "filters.npz")
    convs = [spec for spec in layers if spec["kind"] == "Conv2D"]
    assert convs
    for spec in convs:
        assert spec["has_filters"]
        r = client.get(f"/models/digits/filters/{spec['name']}.png")
        assert r.status_code == 200, r.text
        picture = Image.open(io.BytesIO(r.content))
        picture.load()
        assert picture.size == filters_png_size(kernels[spec["name"]].shape)


def test_feature_map_png_refuses_wrong_rank() -> None:
    with pytest.raises(ValueError, match="H x W x C"):
        feature_map_png(np.zeros((4, 4), dtype=np.float32))
