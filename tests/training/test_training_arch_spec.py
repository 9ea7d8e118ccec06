"""Architecture descriptions: shapes computed up front, impossible specs refused clearly."""

from __future__ import annotations

import pytest

from training.errors import TrainingError
from training.spec import DEFAULT_LAYERS, parse_layer_flag, parse_layers


def test_default_is_the_course_cnn_for_256_grayscale() -> None:
    layers = parse_layers(DEFAULT_LAYERS, (256, 256, 1), 3)
    assert [layer.name for layer in layers] == [
        "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2", "flatten_1",
    ]  # fmt: skip
    # 256 -conv3/2 valid-> 127 -pool2-> 63 -conv3 valid-> 61 -pool2-> 30
    assert [layer.output_shape for layer in layers] == [
        (127, 127, 16), (63, 63, 16), (61, 61, 32), (30, 30, 32), (30 * 30 * 32,),
    ]  # fmt: skip
    assert layers[0].params["strides"] == [2, 2]


def test_same_padding_and_global_pooling_shapes() -> None:
    raw = [
        {
            "type": "conv2d",
            "filters": 8,
            "kernel_size": [5, 3],
            "strides": [2, 3],
            "padding": "same",
        },
        {"type": "max_pooling2d", "pool_size": 3, "strides": 2, "padding": "same"},
        {"type": "global_average_pooling2d"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 5, "activation": "tanh"},
    ]
    layers = parse_layers(raw, (17, 20, 3), 2)
    assert [layer.output_shape for layer in layers] == [(9, 7, 8), (5, 4, 8), (8,), (8,), (5,)]
    assert [layer.is_feature_map for layer in layers] == [True, True, False, False, False]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"type": "conv2d", "filters": 4, "kernel_size": 3, "strides": 8},
          {"type": "conv2d", "filters": 4, "kernel_size": 3},
          {"type": "flatten"}], "below 1x1"),
        ([{"type": "conv2d", "filters": 4, "padding": "full"}, {"type": "flatten"}],
         "padding must be one of valid, same"),
        ([{"type": "conv2d", "filters": 4, "size": 3}, {"type": "flatten"}], "unknown key(s) size"),
        ([{"type": "conv2d", "filters": -4}, {"type": "flatten"}], "filters must be a positive"),
        ([{"type": "conv3d", "filters": 4}, {"type": "flatten"}], "unknown layer type"),
        ([{"type": "conv2d", "filters": 4}], "flatten or global_average_pooling2d"),
        ([{"type": "conv2d", "filters": 4}, {"type": "dense", "units": 3}], "after flatten"),
        ([{"type": "conv2d", "filters": 4}, {"type": "flatten"}, {"type": "conv2d", "filters": 2}],
         "before flatten"),
        ([{"type": "max_pooling2d"}, {"type": "flatten"}], "at least one conv2d"),
        ([{"type": "conv2d", "filters": 4}, {"type": "flatten"}, {"type": "dropout", "rate": 1}],
         "dropout rate"),
        ([{"type": "conv2d", "filters": 4, "activation": "softmax!"}, {"type": "flatten"}],
         "activation must be one of"),
        ([], "non-empty list"),
        ({"type": "conv2d"}, "non-empty list"),
    ],
)  # fmt: skip
def test_impossible_specs_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(TrainingError) as caught:
        parse_layers(raw, (16, 16, 1), 3)
    assert message in str(caught.value)


def test_shrinking_message_names_the_layer_and_sizes() -> None:
    raw = [{"type": "conv2d", "filters": 4, "kernel_size": 9}, {"type": "flatten"}]
    with pytest.raises(TrainingError) as caught:
        parse_layers(raw, (8, 8, 1), 2)
    assert "layer 1" in str(caught.value) and "8x8 input leaves 0x0" in str(caught.value)


def test_layer_flag_syntax() -> None:
    assert parse_layer_flag("conv2d:filters=32,kernel_size=3x5,strides=2,padding=same") == {
        "type": "conv2d", "filters": 32, "kernel_size": [3, 5], "strides": 2, "padding": "same",
    }  # fmt: skip
    assert parse_layer_flag("dropout:rate=0.25") == {"type": "dropout", "rate": 0.25}
    assert parse_layer_flag("flatten") == {"type": "flatten"}
    with pytest.raises(TrainingError, match="key=value"):
        parse_layer_flag("conv2d:filters")
