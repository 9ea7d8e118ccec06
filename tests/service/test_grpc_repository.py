"""Triton's model repository extension over gRPC, with tritonclient.grpc against a live server:
the index with states and reasons (poll and explicit mode), load and unload in explicit
mode, the API key, each refusal's gRPC code and message, and the request metrics."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from service.grpc import grpc_predict_v2_pb2 as pb
from tests.service.grpc_support import AUTH, KEY, stub
from tests.service.model_repo import model_dir, shifted_version, tamper
from tests.service.serving import ROOT, LiveServer, free_port, settings

HEADERS = {"authorization": f"Bearer {KEY}"}
SEVEN = (ROOT / "tests" / "data" / "seven.png").read_bytes()
ROUTE = "/inference.GRPCInferenceService/"


@pytest.fixture
def explicit(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    models = model_dir(tmp_path, "digits", "spare")
    cfg = settings(model_dir=models, model_control="explicit", api_key=KEY, grpc_port=free_port())
    with LiveServer(cfg) as server:
        yield server, models


@pytest.fixture
def client(explicit) -> Iterator[tgrpc.InferenceServerClient]:
    with tgrpc.InferenceServerClient(explicit[0].grpc_target) as c:
        yield c


def _index(client: tgrpc.InferenceServerClient) -> dict[tuple[str, str], tuple[str, str]]:
    response = client.get_model_repository_index(headers=HEADERS)
    return {(m.name, m.version): (m.state, m.reason) for m in response.models}


def _refused(call, *args, **kw) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kw)
    return info.value.status(), info.value.message()


def _predicted_label(client: tgrpc.InferenceServerClient, model: str) -> tuple[str, int]:
    image = tgrpc.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([SEVEN], dtype=object))
    result = client.infer(model, [image], headers=HEADERS)
    version = result.get_response().model_version
    return version, int(result.as_numpy("probabilities").argmax())


def test_index_load_and_unload_in_explicit_mode(explicit, client) -> None:
    server, models = explicit
    assert _index(client) == {("digits", "1"): ("READY", ""), ("spare", "1"): ("READY", "")}
    assert _predicted_label(client, "spare") == ("1", 7)
    client.unload_model("spare", headers=HEADERS)  # tritonclient sends unload_dependents
    assert _index(client)[("spare", "1")] == ("UNAVAILABLE", "unloaded")
    channel, raw = stub(server.grpc_target)  # tritonclient never sends `ready`
    with channel:
        ready = raw.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), metadata=AUTH)
    assert [(m.name, m.version, m.state) for m in ready.models] == [("digits", "1", "READY")]
    for status, message in (
        _refused(client.is_model_ready, "spare", headers=HEADERS),
        _refused(_predicted_label, client, "spare"),
    ):
        assert status == "StatusCode.NOT_FOUND" and "no model named 'spare'" in message
    # a new version on disk is only picked up when asked for
    for name, data in shifted_version(models / "spare" / "2", name="spare").items():
        (models / "spare" / "2" / name).write_bytes(data)
    time.sleep(0.3)
    assert _index(client).get(("spare", "2"), ("",))[0] != "READY"
    client.load_model("spare", headers=HEADERS)
    index = _index(client)
    assert index[("spare", "1")] == ("READY", "") and index[("spare", "2")] == ("READY", "")
    assert client.is_model_ready("spare", "2", headers=HEADERS)
    assert _predicted_label(client, "spare") == ("2", 8)  # version 2 answers (7 + 1) % 10


def test_every_repository_call_needs_the_api_key(explicit, client) -> None:
    for call in (
        lambda: client.get_model_repository_index(),
        lambda: client.load_model("spare"),
        lambda: client.unload_model("spare", headers={"authorization": "Bearer wrong"}),
    ):
        status, message = _refused(call)
        assert status == "StatusCode.UNAUTHENTICATED" and "API key" in message
    assert _index(client)[("spare", "1")] == ("READY", "")  # nothing was unloaded


def test_refusals_carry_their_code_and_say_why(explicit, client) -> None:
    server, models = explicit
    status, message = _refused(client.unload_model, "digits", headers=HEADERS)
    assert status == "StatusCode.FAILED_PRECONDITION" and "default model" in message
    status, message = _refused(client.load_model, "nothing", headers=HEADERS)
    assert status == "StatusCode.NOT_FOUND" and "no model 'nothing'" in message
    status, message = _refused(client.unload_model, "nothing", headers=HEADERS)
    assert status == "StatusCode.NOT_FOUND" and "no model named 'nothing'" in message
    status, message = _refused(
        client.load_model, "spare", headers=HEADERS, config='{"backend": "onnxruntime"}'
    )
    assert status == "StatusCode.INVALID_ARGUMENT" and "not supported" in message
    # a model whose only version is corrupt: refused with the reason, nothing served
    shutil.copytree(models / "spare" / "1", models / "broken" / "1")
    tamper(models / "broken" / "1")
    status, message = _refused(client.load_model, "broken", headers=HEADERS)
    assert status == "StatusCode.FAILED_PRECONDITION"
    assert "sha256" in message and "broken" in message
    state, reason = _index(client)[("broken", "1")]
    assert state == "UNAVAILABLE" and "sha256" in reason
    assert _index(client)[("digits", "1")] == ("READY", "")
    # what tritonclient cannot send: a path for a name, a named repository
    channel, raw = stub(server.grpc_target)
    with channel:
        for request in (
            pb.RepositoryModelLoadRequest(model_name=".."),
            pb.RepositoryModelLoadRequest(model_name=""),
            pb.RepositoryModelLoadRequest(model_name="spare", repository_name="other"),
        ):
            with pytest.raises(grpc.RpcError) as info:
                raw.RepositoryModelLoad(request, metadata=AUTH)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert "repository" in info.value.details()


def _requests(url: str) -> dict[tuple[str, str, str], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "convserve_requests_total" and s.labels["route"].startswith(ROUTE)
    }


def test_repository_calls_are_counted_as_posts(explicit, client) -> None:
    server, _ = explicit
    client.get_model_repository_index(headers=HEADERS)
    client.unload_model("spare", headers=HEADERS)
    client.load_model("spare", headers=HEADERS)
    _refused(client.load_model, "spare")
    _refused(client.unload_model, "digits", headers=HEADERS)
    counts = _requests(server.url)
    assert counts[(ROUTE + "RepositoryIndex", "POST", "200")] == 1
    assert counts[(ROUTE + "RepositoryModelUnload", "POST", "200")] == 1
    assert counts[(ROUTE + "RepositoryModelLoad", "POST", "200")] == 1
    assert counts[(ROUTE + "RepositoryModelLoad", "POST", "401")] == 1
    assert counts[(ROUTE + "RepositoryModelUnload", "POST", "409")] == 1


def test_poll_mode_lists_versions_with_reasons_and_refuses_load(tmp_path: Path) -> None:
    models = model_dir(tmp_path)
    shutil.copytree(models / "digits" / "1", models / "digits" / "2")
    tamper(models / "digits" / "2")
    cfg = settings(model_dir=models, model_control="poll", model_poll_s=0.2, grpc_port=free_port())
    with LiveServer(cfg) as server, tgrpc.InferenceServerClient(server.grpc_target) as c:
        index = {(m.name, m.version): m for m in c.get_model_repository_index().models}
        assert (index[("digits", "1")].state, index[("digits", "1")].reason) == ("READY", "")
        assert index[("digits", "2")].state == "UNAVAILABLE"
        assert "sha256" in index[("digits", "2")].reason
        listed = c.get_model_repository_index(as_json=True)["models"]
        assert listed[0] == {"name": "digits", "version": "1", "state": "READY"}
        for call in (c.load_model, c.unload_model):
            status, message = _refused(call, "digits")
            assert status == "StatusCode.FAILED_PRECONDITION"
            assert "CONVSERVE_MODEL_CONTROL=explicit" in message
