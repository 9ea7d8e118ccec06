"""The tuner times real onnxruntime sessions and keeps every explicit setting.

Which shape wins depends on the machine, so no test asserts a winner or a
speed: only that the choice is made from candidates it measured, is within
the bounds it was given, and that explicitly set knobs are never changed.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest

from service import autotune
from service.autotune import Fixed, Shape, Tuner
from tests.service.serving import DIGITS

MODEL = str(DIGITS / "model.onnx")


def make_session(threads: int, spinning: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])


def tuner(cpus: int = 2) -> Tuner:
    return Tuner(make_session, "image", (32, 32, 1), "probabilities", cpus=cpus, budget_s=2.0)


def test_a_cheap_model_gets_one_caller_and_the_largest_batch() -> None:
    t = tuner()
    choice = t.tune(Fixed(), batch_cap=16)
    assert choice.source == "auto" and choice.cpus == 2
    assert set(choice.measured["solo"]) == {"2 threads", "2 threads, spinning", "1 thread"}
    assert "cheap" in choice.measured  # digits runs in well under 0.5 ms
    shape = choice.shape
    assert (shape.inference_threads, shape.max_batch_size) == (1, 16)
    assert (shape.intra_op_threads, shape.intra_op_spinning) in t.sessions
    doc = choice.as_dict()
    assert doc["chosen"]["max_batch_size"] == 16 and doc["source"] == "auto"


def test_the_full_search_stays_within_its_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotune, "CHEAP_S", 0.0)  # time the busy and batch phases too
    t = tuner()
    choice = t.tune(Fixed(), batch_cap=8)
    shape = choice.shape
    assert set(choice.measured["busy"]) <= {"1x1 batch 8", "1x2 batch 8", "2x1 batch 8"}
    assert choice.measured["busy"] and choice.measured["batch"]
    assert (shape.inference_threads, shape.intra_op_threads) in {(1, 1), (1, 2), (2, 1)}
    assert shape.max_batch_size in {1, 2, 4, 8}
    assert str(shape.max_batch_size) in choice.measured["batch"]
    if shape.solo_intra_op_threads is not None:  # a lone batch gets the faster session
        assert shape.inference_threads > 1
        assert (shape.solo_intra_op_threads, shape.solo_spinning) in t.sessions


def test_explicit_settings_are_kept() -> None:
    choice = tuner().tune(Fixed(intra_op_threads=1, max_batch_size=4), batch_cap=32)
    assert choice.source == "auto+settings"
    assert (choice.shape.intra_op_threads, choice.shape.max_batch_size) == (1, 4)
    assert set(choice.measured["solo"]) == {"1 thread"}


def test_everything_set_means_nothing_is_timed() -> None:
    t = tuner()
    fixed = Fixed(inference_threads=2, intra_op_threads=1, intra_op_spinning=True, max_batch_size=4)
    choice = t.tune(fixed, batch_cap=32)
    assert choice.source == "settings" and choice.measured == {} and not t.sessions
    assert choice.shape == Shape(2, 1, True, 4)


def test_one_cpu_has_one_shape_to_try(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotune, "CHEAP_S", 0.0)
    choice = tuner(cpus=1).tune(Fixed(), batch_cap=4)
    assert set(choice.measured["solo"]) == {"1 thread"} and "busy" not in choice.measured
    assert (choice.shape.inference_threads, choice.shape.intra_op_threads) == (1, 1)
