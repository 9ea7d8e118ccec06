"""Dynamic batching seen from outside: concurrent requests share batches, answers stay theirs."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.service.serving import (
    LiveServer,
    answer_probabilities,
    distinct_label_images,
    reference,
    reference_session,
    settings,
)


def _histogram(metrics_text: str, name: str) -> dict[str, float]:
    """{le: cumulative count, "count": n, "sum": s} of one histogram (single label set)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out[sample.labels["le"]] = sample.value
            elif sample.name.endswith("_count"):
                out["count"] = sample.value
            elif sample.name.endswith("_sum"):
                out["sum"] = sample.value
    return out


async def _fire(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post("/predict?top_k=10", content=b, headers={"Content-Type": "image/png"})
                for b in bodies
            )
        )


def test_concurrent_requests_share_batches_without_cross_talk() -> None:
    images = distinct_label_images(48)
    # every decode through the pool, so the batcher knows what is on its way and gathers it
    cfg = settings(
        max_batch_size=16, max_batch_delay_ms=20, decode_threads=2, inline_decode_max_pixels=0
    )
    with LiveServer(cfg) as live:
        responses = asyncio.run(_fire(live.url, [data for _, data in images]))
        metrics = httpx.get(live.url + "/metrics").text
    expected = reference([data for _, data in images])["probabilities"]
    for (label, _), response, want in zip(images, responses, expected, strict=True):
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["label"] == str(label)  # its own image's label, not a neighbour's
        (got,) = answer_probabilities(response.json())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    batches = _histogram(metrics, "convserve_batch_size")
    assert batches["sum"] >= 48  # every image went through the model (plus nothing else)
    assert batches["1.0"] < batches["count"], f"no batch larger than one: {batches}"
    assert batches["16.0"] == batches["count"]  # never above max_batch_size


def test_full_queue_answers_503_with_retry_after() -> None:
    # max_queue=1 and a long gather window: while one image waits, the others find it full
    images = distinct_label_images(24)
    cfg = settings(
        max_queue=1, max_batch_size=64, max_batch_delay_ms=500, inline_decode_max_pixels=0
    )
    with LiveServer(cfg) as live:
        responses = asyncio.run(_fire(live.url, [data for _, data in images]))
        assert httpx.get(live.url + "/healthz").status_code == 200
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "queue_full"


def test_passed_deadline_answers_504() -> None:
    # decoding a 2000 x 2000 PNG takes far longer than the 1 ms request timeout
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", compress_level=1)
    with LiveServer(settings(request_timeout_s=0.001)) as live, live.client() as client:
        r = client.post("/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"
        assert client.get("/healthz").status_code == 200


def _counter(metrics_text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    )


def test_padded_batches_answer_like_unpadded_and_are_counted() -> None:
    """pad_batches=on (the CUDA default) on the CPU: same answers, padding in /metrics."""
    images = [data for _, data in distinct_label_images(8)]
    with LiveServer(settings(pad_batches="on", max_batch_size=8)) as live, live.client() as c:
        assert c.get("/models/digits").json()["padded_batch_sizes"] == [1, 2, 4, 8]
        for count in (3, 5, 8):  # one request at a time: one batch each, 3->4, 5->8, 8
            files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
            response = c.post("/predict?top_k=10", files=files[:count])
            assert response.status_code == 200, response.text
            got = answer_probabilities(response.json())
            want = reference(images[:count])["probabilities"]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        # feature maps of a padded batch: 3 rows -> 4, through the v2 tensor endpoint
        batch = np.random.default_rng(3).random((3, 32, 32, 1), dtype=np.float32)
        tensor = {"name": "image", "shape": list(batch.shape), "datatype": "FP32"}
        body = {"inputs": [{**tensor, "data": batch.ravel().tolist()}]}
        body["outputs"] = [{"name": "conv2d_1"}]
        maps = c.post("/v2/models/digits/infer", json=body)
        assert maps.status_code == 200, maps.text
        (out,) = maps.json()["outputs"]
        want = reference_session().run(["conv2d_1"], {"image": batch})[0]
        assert out["shape"] == list(want.shape)
        np.testing.assert_allclose(np.array(out["data"]).reshape(want.shape), want, atol=1e-5)
        metrics = c.get("/metrics").text
    assert _counter(metrics, "convserve_padded_rows") == 1 + 3 + 1
    assert _histogram(metrics, "convserve_batch_size")["sum"] == 3 + 5 + 8 + 3  # real rows only


def test_cpu_does_not_pad_by_default(client: httpx.Client) -> None:
    assert client.get("/models/digits").json()["padded_batch_sizes"] == []
