"""The answer of a classification: probabilities per image and their ranking.

Shared by every protocol that classifies (`/predict`, OIP's `classification`
parameter, V1); knows numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.models import ServedModel

# Up to this many classes the ranking is a Python sort: numpy's argsort releases and
# retakes the GIL even for 3 values, and on a busy server the event loop then waits
# for a decode thread to hand the GIL back before it can answer.
PYTHON_SORT_MAX_CLASSES = 64


def _rank_key(value: float) -> tuple[bool, float]:
    """Highest first, NaN last: the order of a stable argsort of the negated row."""
    return (value != value, 0.0 if value != value else -value)


def top_indices(probabilities: np.ndarray, k: int) -> list[list[int]]:
    """Per row, the indices of the `k` highest values, best first (ties: lower index first)."""
    if probabilities.shape[1] > PYTHON_SORT_MAX_CLASSES:
        return np.argsort(-probabilities, axis=1, kind="stable")[:, :k].tolist()
    return [
        sorted(range(len(row)), key=lambda j, row=row: _rank_key(row[j]))[:k]
        for row in probabilities.tolist()
    ]


@dataclass(frozen=True)
class Classification:
    """Class probabilities per image and the top-k class indices, best first."""

    model: ServedModel
    probabilities: np.ndarray  # (N, classes) float32
    top_k: int

    def ranked(self) -> list[list[int]]:
        """Per image, the top_k class indices by probability (ties: the lower index first)."""
        return top_indices(self.probabilities, self.top_k)
