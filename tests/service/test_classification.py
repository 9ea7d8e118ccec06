"""The ranking: a Python sort for a few classes, numpy's argsort for many; one order."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.classification import PYTHON_SORT_MAX_CLASSES, top_indices

# probabilities with many ties, NaN and infinities: the edge cases of a stable sort
VALUES = st.sampled_from([0.0, -0.0, 0.25, 0.5, 1.0, np.nan, np.inf, -np.inf]) | st.floats(width=32)


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, PYTHON_SORT_MAX_CLASSES + 8)),
        elements=VALUES,
    ),
    st.data(),
)
def test_top_indices_is_a_stable_argsort_of_the_negated_rows(probs: np.ndarray, data) -> None:
    k = data.draw(st.integers(1, probs.shape[1]))
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist()
    assert top_indices(probs, k) == expected
