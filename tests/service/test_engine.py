"""Provider choice is decided from the created session, and session options are applied."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from service.engine import CPU, CUDA, Engine, EngineError, EngineOptions
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
