"""Compile and train with seeds set, early stopping and a final held-out evaluation."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from training.config import TrainConfig


@dataclass
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int  # 0-based index into history
    epochs_run: int
    val_loss: float
    val_accuracy: float
    val_true: np.ndarray  # class indices, validation order
    val_pred: np.ndarray


def set_seeds(seed: int) -> None:
    """Python, numpy and TensorFlow RNGs, plus deterministic TF ops, for repeatable runs."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(model, data, config: TrainConfig) -> FitResult:
    """model.fit on the training iterator, validating on the held-out one."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if config.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
                verbose=1,
            )
        )
    verbose = 1 if sys.stdout.isatty() else 2
    history = model.fit(
        data.train,
        validation_data=data.validation,
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=verbose,
    ).history
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    best = int(np.argmin(history["val_loss"])) if config.early_stopping_patience else -1
    best = best if best >= 0 else len(history["val_loss"]) - 1
    val_loss, val_accuracy = model.evaluate(data.validation, verbose=0)
    probabilities = model.predict(data.validation, verbose=0)
    return FitResult(
        history=history,
        best_epoch=best,
        epochs_run=len(history["loss"]),
        val_loss=float(val_loss),
        val_accuracy=float(val_accuracy),
        val_true=np.asarray(data.validation.classes),
        val_pred=probabilities.argmax(axis=1),
    )
