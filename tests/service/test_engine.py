"""Provider choice is decided from the created session, and session options are applied."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from service.engine import CPU, CUDA, Engine, EngineError, EngineOptions, cuda_provider_options
from tests.service.serving import DIGITS

MODEL = DIGITS / "model.onnx"


def _cuda_works() -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    session = ort.InferenceSession(str(MODEL), providers=[CUDA, CPU])
    return session.get_providers()[0] == CUDA


def test_cpu_engine_runs_and_applies_session_options() -> None:
    engine = Engine(MODEL, EngineOptions(providers="cpu", intra_op_threads=1))
    assert engine.provider == CPU
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == 1
    # idle intra-op threads must not spin: they would take the decode pool's cores
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    out = engine.run(np.zeros((3, 32, 32, 1), np.float32), ["probabilities", "conv2d_1"])
    assert out["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1, rtol=1e-5)


@pytest.mark.skipif(_cuda_works(), reason="CUDA really works here")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_without_cuda_refuses_with_a_clear_message() -> None:
    with pytest.raises(EngineError, match="providers=cuda but the onnxruntime session") as info:
        Engine(MODEL, EngineOptions(providers="cuda"))
    assert "Refusing to start" in str(info.value)


def test_auto_logs_what_it_really_got(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="convserve.engine"):
        engine = Engine(MODEL, EngineOptions(providers="auto"))
    assert engine.provider in (CPU, CUDA)
    assert engine.provider in caplog.text


def test_broken_model_file_is_an_engine_error(tmp_path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(EngineError, match="cannot load the model"):
        Engine(bad, EngineOptions(providers="cpu"))


def _digit_batch(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).random((rows, 32, 32, 1), dtype=np.float32)


def test_padded_size_is_the_next_warmed_size() -> None:
    engine = Engine(MODEL, EngineOptions(providers="cpu", pad_batches="on", max_batch_size=12))
    plain = Engine(MODEL, EngineOptions(providers="cpu", pad_batches="off", max_batch_size=12))
    assert engine.padded_sizes == [1, 2, 4, 8, 12] and plain.padded_sizes == []
    # over max_batch_size (the batcher never forms one) a batch runs at its own size
    assert [engine.padded_size(n) for n in (1, 3, 5, 9, 12, 13)] == [1, 4, 8, 12, 12, 13]
    assert [plain.padded_size(n) for n in (1, 3, 5, 9, 12, 13)] == [1, 3, 5, 9, 12, 13]


def test_auto_pads_only_on_cuda() -> None:
    engine = Engine(MODEL, EngineOptions(providers="auto", pad_batches="auto"))
    assert engine.padded_sizes == ([] if engine.provider == CPU else [1, 2, 4, 8, 16, 32])


def test_cuda_provider_options_follow_the_settings() -> None:
    options = cuda_provider_options(EngineOptions(cuda_device_id=1, cuda_mem_limit_mb=512))
    assert options["device_id"] == "1"
    assert options["use_tf32"] == "0"  # TF32 would move answers past the 1e-4 contract
    assert options["gpu_mem_limit"] == str(512 * 1024 * 1024)
    assert "gpu_mem_limit" not in cuda_provider_options(EngineOptions())
    tf32 = cuda_provider_options(EngineOptions(cuda_use_tf32=True, cuda_prefer_nhwc=True))
    assert tf32["use_tf32"] == "1" and tf32["prefer_nhwc"] == "1"


@pytest.mark.skipif(not _cuda_works(), reason="needs a working CUDA execution provider")
def test_cuda_session_runs_with_the_configured_options() -> None:
    options = EngineOptions(
        providers="cuda", cudnn_conv_algo_search="HEURISTIC", cuda_mem_limit_mb=1024
    )
    engine = Engine(MODEL, options)
    assert engine.provider == CUDA and engine.padded_sizes == [1, 2, 4, 8, 16, 32]
    active = engine.session.get_provider_options()[CUDA]
    wanted = cuda_provider_options(options)
    for key in ("device_id", "cudnn_conv_algo_search", "use_tf32", "gpu_mem_limit"):
        assert active[key] == wanted[key], key
    cpu = Engine(MODEL, EngineOptions(providers="cpu"))
    batch = _digit_batch(5)
    np.testing.assert_allclose(
        engine.run(batch, ["probabilities"])["probabilities"],
        cpu.run(batch, ["probabilities"])["probabilities"],
        rtol=0,
        atol=1e-4,
    )
