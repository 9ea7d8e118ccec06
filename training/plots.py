"""Training curves and confusion matrix as PNG bytes (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import io

import numpy as np


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def training_curves(history: dict[str, list[float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, title in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
        ax.plot(epochs, history[key], marker="o", label="training")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(figure)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> tuple[bytes, list]:
    """Rows are true classes, columns predictions (validation set); also returns the counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=int), np.asarray(pred, dtype=int)), 1)
    size = max(4.0, 0.5 * n + 2)
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (validation, {int(counts.sum())} images)")
    if n <= 30:
        limit = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                colour = "white" if counts[i, j] > limit else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour)
    return _png(figure), counts.tolist()
