"""The /predict answer's JSON (orjson): every probability as the exact double of its
float32, ranked as the classification ranks it; non-finite values as null."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.classification import Classification
from service.routes.predict import predictions_json

EDGES = [0.0, -0.0, 1e-30, 0.5, 1.0, np.nan, np.inf, -np.inf]
VALUES = st.sampled_from(EDGES) | st.floats(width=32)
LABELS = st.text(min_size=1, max_size=6)  # quotes, backslashes, control and non-ASCII text


def _model(classes: list[str]) -> SimpleNamespace:
    """What predictions_json reads of a served model: its name, version and classes."""
    return SimpleNamespace(name='m "1"', version="2", bundle=SimpleNamespace(classes=classes))


@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 12)), elements=VALUES),
    st.data(),
)
def test_the_answer_is_the_ranking_with_exact_values(probs: np.ndarray, data) -> None:
    classes = data.draw(st.lists(LABELS, min_size=probs.shape[1], max_size=probs.shape[1]))
    names = data.draw(st.lists(st.none() | LABELS, min_size=len(probs), max_size=len(probs)))
    k = data.draw(st.integers(1, probs.shape[1]))
    result = Classification(_model(classes), probs, k)
    doc = json.loads(predictions_json(result, names))  # strict JSON: no NaN or Infinity

    def exact(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    assert doc["model"] == {"name": 'm "1"', "version": "2"}
    for filename, row, top, answer in zip(
        names, probs, result.ranked(), doc["predictions"], strict=True
    ):
        ranked = [{"label": classes[j], "probability": exact(row[j])} for j in top]
        assert answer == {
            "filename": filename,
            "label": ranked[0]["label"],
            "probability": ranked[0]["probability"],
            "top_k": ranked,
        }


def test_a_nan_probability_is_null_not_the_non_json_nan() -> None:
    probs = np.array([[np.nan, 0.25]], np.float32)
    body = predictions_json(Classification(_model(["a", "b"]), probs, 2), [None])
    assert b"NaN" not in body
    assert json.loads(body)["predictions"][0]["top_k"] == [
        {"label": "b", "probability": 0.25},
        {"label": "a", "probability": None},
    ]


def test_a_filename_with_a_lone_surrogate_is_echoed_as_valid_text() -> None:
    """A JSON body may escape one ("\\ud800"); orjson refuses to write it: not a 500."""
    probs = np.array([[0.75, 0.25]], np.float32)
    body = predictions_json(Classification(_model(["a", "b"]), probs, 1), ["x\ud800.png"])
    answer = json.loads(body)["predictions"][0]
    assert answer["filename"].startswith("x") and answer["filename"].endswith(".png")
    assert "\ud800" not in answer["filename"] and "\ufffd" in answer["filename"]
    assert answer["label"] == "a" and answer["probability"] == 0.75
