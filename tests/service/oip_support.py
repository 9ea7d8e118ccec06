"""A small in-memory bundle shared by the Open Inference Protocol unit tests."""

from __future__ import annotations

from service.bundle import Bundle, FeatureMapSpec, InputSpec, Preprocessing

LABELS = [str(i) for i in range(10)]


def toy_bundle() -> Bundle:
    """8x8 grayscale, ten classes, one Conv2D feature map; never loaded from disk."""
    return Bundle(
        name="digits",
        version="1",
        input=InputSpec(height=8, width=8, channels=1, color_mode="grayscale"),
        preprocessing=Preprocessing(rescale=1 / 16),
        classes=LABELS,
        feature_maps=[FeatureMapSpec(name="conv2d", kind="Conv2D", shape=[6, 6, 4])],
        sha256="0" * 64,
    )
