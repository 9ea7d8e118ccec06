"""Build the Keras functional model from validated LayerSpecs, with predictable layer names."""

from __future__ import annotations

from training.spec import LayerSpec

PROBABILITIES = "probabilities"


def build_model(layers: list[LayerSpec], input_shape: tuple[int, int, int], num_classes: int):
    """Input `image` -> the spec's stack -> Dense softmax named `probabilities`."""
    import keras

    inputs = keras.Input(shape=input_shape, name="image", dtype="float32")
    x = inputs
    for layer in layers:
        p = layer.params
        if layer.type == "conv2d":
            x = keras.layers.Conv2D(
                p["filters"],
                tuple(p["kernel_size"]),
                strides=tuple(p["strides"]),
                padding=p["padding"],
                activation=p["activation"],
                name=layer.name,
            )(x)
        elif layer.type == "max_pooling2d":
            x = keras.layers.MaxPooling2D(
                tuple(p["pool_size"]),
                strides=tuple(p["strides"]),
                padding=p["padding"],
                name=layer.name,
            )(x)
        elif layer.type == "flatten":
            x = keras.layers.Flatten(name=layer.name)(x)
        elif layer.type == "global_average_pooling2d":
            x = keras.layers.GlobalAveragePooling2D(name=layer.name)(x)
        elif layer.type == "dense":
            x = keras.layers.Dense(p["units"], activation=p["activation"], name=layer.name)(x)
        elif layer.type == "dropout":
            x = keras.layers.Dropout(p["rate"], name=layer.name)(x)
        else:  # parse_layers only lets known types through
            raise AssertionError(layer.type)
        if tuple(x.shape[1:]) != layer.output_shape:
            raise AssertionError(f"{layer.name}: spec says {layer.output_shape}, Keras {x.shape}")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=PROBABILITIES)(x)
    return keras.Model(inputs, outputs, name="convserve_cnn")
