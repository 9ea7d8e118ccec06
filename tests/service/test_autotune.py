"""The tuner times real onnxruntime sessions and keeps every explicit setting.

Which shape wins depends on the machine, so no test asserts a winner or a
speed: only that the choice is made from candidates it measured, is within
the bounds it was given, and that explicitly set knobs are never changed.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from service import autotune
from service.autotune import Fixed, Shape, Tuner
from service.execution import SoloOrBusy, cpu_quota, cpu_share, fixed_from, tune_session
from service.settings import Settings
from tests.service.serving import DIGITS, LiveServer, digit_images, settings

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


class Recorder:
    """A session stand-in that says which one ran and can hold a run open."""

    def __init__(self, name: str, hold: threading.Event | None = None) -> None:
        self.name, self.hold, self.runs = name, hold, 0
        self.started = threading.Event()

    def run(self, outputs: list[str], feeds: dict) -> str:
        self.runs += 1
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        return self.name

    def get_inputs(self) -> str:
        return f"{self.name} inputs"


def test_a_lone_run_takes_the_solo_session_and_overlapping_runs_the_busy_one() -> None:
    release = threading.Event()
    solo, busy = Recorder("solo", hold=release), Recorder("busy")
    pair = SoloOrBusy(busy, solo)
    first = threading.Thread(target=pair.run, args=([], {}))
    first.start()
    assert solo.started.wait(10)
    assert pair.run([], {}) == "busy"  # the solo session is in use: this one overlaps
    release.set()
    first.join(10)
    assert pair.run([], {}) == "solo"  # alone again
    assert (solo.runs, busy.runs) == (2, 1)
    assert pair.get_inputs() == "busy inputs"  # everything else is the busy session's


def test_only_explicitly_set_knobs_are_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fixed_from(Settings()) == Fixed()
    monkeypatch.setenv("CONVSERVE_MAX_BATCH_SIZE", "32")  # the default value, but given
    got = fixed_from(Settings(intra_op_threads=1))
    assert got == Fixed(intra_op_threads=1, max_batch_size=32)


def test_tune_session_returns_a_runnable_session_and_the_choice() -> None:
    probe = make_session(1, False)
    session, choice = tune_session(
        make_session, probe, Fixed(), cpus=2, batch_cap=8, output="probabilities", label="d/1"
    )
    out = session.run(["probabilities"], {"image": np.zeros((3, 32, 32, 1), np.float32)})
    assert out[0].shape == (3, 10)
    assert choice.shape.max_batch_size <= 8 and choice.source == "auto"


def _session_threads(session: object) -> int:
    busy = session.busy if isinstance(session, SoloOrBusy) else session
    return busy.get_session_options().intra_op_num_threads


def test_the_chosen_shape_is_applied_and_shown_in_models() -> None:
    with LiveServer(settings()) as live, live.client() as c:
        doc = c.get("/models/digits").json()["execution"]
        model = live.app.state.dataplane.model("digits")
        label, png = digit_images()[0]
        answer = c.post("/predict", content=png, headers={"Content-Type": "image/png"})
        assert answer.json()["predictions"][0]["label"] == str(label)
    chosen = doc["chosen"]
    assert doc["source"] == "auto" and doc["measured"]["solo"] and doc["cpus"] >= 1
    assert model.batcher.max_batch_size == chosen["max_batch_size"] <= 32
    assert model.batcher.max_concurrent == chosen["inference_threads"]
    assert _session_threads(model.engine.session) == chosen["intra_op_threads"]


def test_explicit_settings_override_the_tuner() -> None:
    cfg = settings(inference_threads=2, intra_op_threads=1, intra_op_spinning=False,
                   max_batch_size=4)  # fmt: skip
    with LiveServer(cfg) as live, live.client() as c:
        doc = c.get("/models/digits").json()["execution"]
        model = live.app.state.dataplane.model("digits")
    assert doc["source"] == "settings" and doc["measured"] == {}
    assert doc["chosen"] | {"solo_intra_op_threads": None} == {
        "inference_threads": 2, "intra_op_threads": 1, "intra_op_spinning": False,
        "max_batch_size": 4, "solo_intra_op_threads": None, "solo_spinning": False,
    }  # fmt: skip
    assert (model.batcher.max_batch_size, model.batcher.max_concurrent) == (4, 2)
    assert _session_threads(model.engine.session) == 1


def test_one_explicit_knob_is_kept_and_the_rest_tuned() -> None:
    with LiveServer(settings(max_batch_size=8)) as live, live.client() as c:
        doc = c.get("/models/digits").json()["execution"]
    assert doc["source"] == "auto+settings" and doc["chosen"]["max_batch_size"] == 8


def test_a_container_cpu_limit_caps_the_cpus_tuned_for(tmp_path) -> None:
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1"
    v1.mkdir()
    assert cpu_quota(v2, v1) is None  # neither file: no limit
    v2.write_text("150000 100000\n")
    assert cpu_quota(v2, v1) == 2  # 1.5 CPUs: two threads can use it
    v2.write_text("max 100000\n")
    assert cpu_quota(v2, v1) is None
    v2.unlink()
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v2, v1) == 4
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v2, v1) is None
    assert 1 <= cpu_share(2) <= cpu_share(1)


def test_with_one_caller_only_lone_uploads_take_the_solo_session() -> None:
    solo, busy = Recorder("solo"), Recorder("busy")
    pair = SoloOrBusy(busy, solo, solo_when_idle=False)
    assert pair.run([], {}) == "busy"  # a batch from the queue
    assert pair.run_alone([], {}) == "solo"  # an upload the data plane serves alone


@pytest.mark.parametrize(
    ("cost", "callers", "chosen"),
    [
        ({1: 13.89, 2: 14.17}, 1, 1),  # heavy224: batching costs 2 % per image
        ({1: 13.89, 2: 13.95, 4: 14.5}, 1, 2),  # within the noise: fewer round trips
        ({1: 0.30, 2: 0.20, 4: 0.15, 8: 0.12, 16: 0.118}, 1, 16),
        ({1: 0.30, 2: 0.20, 4: 0.15, 8: 0.12, 16: 0.118}, 2, 8),  # several: the smallest near
        ({1: 1.0, 2: 1.04, 4: 1.2}, 2, 1),
    ],
)
def test_the_batch_size_is_the_cheapest_per_image(
    cost: dict[int, float], callers: int, chosen: int
) -> None:
    assert autotune.pick_batch(cost, callers) == chosen
