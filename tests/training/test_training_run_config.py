"""Config files and flags: every key checked, unreproducible settings refused early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import load_config, parse_rescale, with_overrides
from training.errors import TrainingError


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_rescale_fraction_is_the_float64_quotient() -> None:
    assert parse_rescale("1/255") == 1 / 255
    assert parse_rescale(0.5) == 0.5
    assert parse_rescale("none") is None
    with pytest.raises(TrainingError, match="rescale"):
        parse_rescale("1/0")


def test_sections_merge_with_defaults_and_flags_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {
        "data": {"image_size": [24, 32], "rescale": "1/255", "zoom_range": 0.1},
        "training": {"epochs": 3},
        "layers": [{"type": "conv2d", "filters": 2}, {"type": "flatten"}],
    }))  # fmt: skip
    assert config.data.image_size == (24, 32)
    assert config.data.rescale == 1 / 255
    assert config.training.epochs == 3 and config.training.batch_size == 32
    merged = with_overrides(config, {"color_mode": "rgb", "zoom_range": None}, {"epochs": 5})
    assert merged.data.color_mode == "rgb" and merged.data.zoom_range == 0.1
    assert merged.training.epochs == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "must hold a JSON object"),
        ({"model": {}}, "unknown top-level key(s) model"),
        ({"data": {"colour_mode": "rgb"}}, "unknown key(s) in `data`: colour_mode"),
        ({"data": {"zca_whitening": True}}, "zca_whitening cannot be reproduced"),
        ({"data": {"preprocessing_function": "f"}}, "preprocessing_function cannot be reproduced"),
        ({"data": {"color_mode": "cmyk"}}, "color_mode must be one of"),
        ({"data": {"image_size": [0, 8]}}, "image_size"),
        ({"data": {"validation_split": 1.5}}, "validation_split"),
        ({"training": {"epochs": 0}}, "epochs must be a positive integer"),
        ({"training": {"learning_rate": -1}}, "learning_rate"),
    ],
)
def test_bad_config_files_are_refused(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(TrainingError) as caught:
        load_config(write(tmp_path, content))
    assert message in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot read"):
        load_config(tmp_path / "absent.json")


def test_committed_configs_are_valid() -> None:
    from training.spec import parse_layers

    configs = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.json"))
    assert configs
    for path in configs:
        config = load_config(path)
        height, width = config.data.image_size
        channels = {"grayscale": 1, "rgb": 3, "rgba": 4}[config.data.color_mode]
        assert parse_layers(config.layers, (height, width, channels), 10), path
