"""Occlusion, piece by piece: patch positions, copies, the drop map, chunking and the PNG."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from service import explain
from service.heatmap import LEGEND_HEIGHT, MIN_SIDE, blend, heatmap_png


def test_defaults_follow_the_input_size() -> None:
    small = explain.plan(32, 32)
    assert (small.window, small.stride, small.count) == (8, 4, 49)
    large = explain.plan(224, 224)
    assert (large.window, large.stride, large.count) == (56, 28, 49)
    wide = explain.plan(32, 64)
    assert wide.window == 8 and len(wide.ys) == 7 and len(wide.xs) == 15


def test_the_last_patch_touches_the_far_edge() -> None:
    assert explain.positions(10, 4, 3) == [0, 3, 6]
    assert explain.positions(11, 4, 3) == [0, 3, 6, 7]
    assert explain.positions(5, 5, 1) == [0]


@pytest.mark.parametrize(
    ("window", "stride", "match"),
    [
        (33, None, "larger than the image"),
        (0, None, "at least 1"),
        (8, 0, "stride must be at least 1"),
        (8, 9, "stride 9 is larger than the window 8"),
        (1, 1, "1024 occluded images; the limit is 1000"),
    ],
)
def test_bad_plans_say_why(window: int, stride: int | None, match: str) -> None:
    with pytest.raises(explain.ExplainError, match=match):
        explain.plan(32, 32, window, stride, max_variants=1000)


def test_fills() -> None:
    image = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    assert explain.fill_values(image, "mean").tolist() == [5.0, 6.0]  # per channel
    assert explain.fill_values(image, "zero").tolist() == [0.0, 0.0]
    assert explain.fill_values(image, "constant", 0.25).tolist() == [0.25, 0.25]
    for fill, value, match in [
        ("constant", None, "needs a finite fill_value"),
        ("grey", None, "fill must be one of"),
        ("mean", 0.5, "fill_value is for fill=constant"),
    ]:
        with pytest.raises(explain.ExplainError, match=match):
            explain.fill_values(image, fill, value)


def test_variants_hide_exactly_one_patch_each() -> None:
    rng = np.random.default_rng(3)
    image = rng.random((9, 7, 3), dtype=np.float32) + 1  # never equal to the fill
    where = explain.plan(9, 7, 3, 2)
    fill = np.array([-1, -2, -3], dtype=np.float32)
    copies = explain.variants(image, where, fill, 0, where.count)
    assert copies.shape == (where.count, 9, 7, 3)
    for k, copy in enumerate(copies):
        y, x = where.patch(k)
        hidden = np.zeros((9, 7), bool)
        hidden[y : y + 3, x : x + 3] = True
        assert (copy[hidden] == fill).all()
        assert (copy[~hidden] == image[~hidden]).all()


def test_drop_map_is_the_mean_drop_over_covering_patches() -> None:
    where = explain.plan(4, 4, 2, 2)  # four patches, no overlap
    occluded = np.array([0.9, 0.5, 0.8, 1.0])
    heat = explain.drop_map(where, 1.0, occluded)
    expected = np.array([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5],
                         [0.2, 0.2, 0.0, 0.0], [0.2, 0.2, 0.0, 0.0]])  # fmt: skip
    np.testing.assert_allclose(heat, expected, atol=1e-7)
    overlapping = explain.plan(3, 1, 1, 1)  # patches (0,0), (1,0), (2,0) on a 3x1 column
    np.testing.assert_allclose(explain.drop_map(overlapping, 1.0, np.array([1.0, 0.0, 0.5]))[:, 0],
                               [0.0, 1.0, 0.5])  # fmt: skip


def test_occlusion_sends_bounded_chunks_and_keeps_row_order() -> None:
    """A fake model whose probability of class 0 is the image's mean: the map is then exact."""
    image = np.ones((16, 16, 1), np.float32)
    where = explain.plan(16, 16, 4, 2)  # 49 copies
    sizes: list[int] = []
    running = peak = 0

    async def infer(batch: np.ndarray) -> np.ndarray:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        sizes.append(len(batch))
        await asyncio.sleep(0.001)
        running -= 1
        p0 = batch.mean(axis=(1, 2, 3))
        return np.stack([p0, 1 - p0], axis=1)

    fill = explain.fill_values(image, "zero")
    result = asyncio.run(explain.occlusion(infer, image, where, fill, chunk=8, in_flight=3))
    assert max(sizes) <= 8 and sum(sizes) == where.count + 1
    assert peak <= 3
    assert result.label == 0 and result.probability == 1.0
    # every copy loses 16 of 256 pixels: the drop is 1/16 wherever a patch went
    np.testing.assert_allclose(result.heatmap, 1 / 16, rtol=1e-6)
    chosen = asyncio.run(explain.occlusion(infer, image, where, fill, label=1, chunk=50))
    np.testing.assert_allclose(chosen.heatmap, -1 / 16, rtol=1e-6)  # class 1 gains


def test_png_shows_the_map_over_the_image_with_a_legend() -> None:
    image = np.zeros((32, 32, 1), np.float32)
    image[8:24, 14:18] = 1.0  # a white bar
    heat = np.zeros((32, 32), np.float32)
    heat[8:24, 14:18] = 0.6  # the bar matters
    heat[0:4, 0:4] = -0.3  # a corner that hurts
    picture = Image.open(io.BytesIO(heatmap_png(image, heat, "7")))
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.size == (MIN_SIDE, MIN_SIDE + LEGEND_HEIGHT)
    pixels = np.asarray(picture).astype(int)
    bar, corner, background = pixels[128, 128], pixels[8, 8], pixels[200, 60]
    assert bar[0] > bar[2] + 50  # red over the bar
    assert corner[2] > corner[0] + 20  # blue where hiding raised the probability
    assert (background == 0).all()  # untouched image where nothing matters
    legend = pixels[MIN_SIDE:]
    assert legend[2, 2, 2] > legend[2, 2, 0] and legend[2, -3, 0] > legend[2, -3, 2]
    assert (legend[12:, :, :] < 100).any()  # the scale's text is drawn
    blended, scale = blend(image, heat)
    assert scale == pytest.approx(0.6) and blended.shape == (32, 32, 3)
