"""The answer of a classification: probabilities per image and their ranking.

Shared by every protocol that classifies (`/predict`, OIP's `classification`
parameter, V1); knows numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.models import ServedModel


@dataclass(frozen=True)
class Classification:
    """Class probabilities per image and the top-k class indices, best first."""

    model: ServedModel
    probabilities: np.ndarray  # (N, classes) float32
    top_k: int

    def ranked(self) -> list[list[int]]:
        """Per image, the top_k class indices by probability (ties: the lower index first)."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")
        return order[:, : self.top_k].tolist()
