"""Helpers for tests: a tiny stand-in model artifact with the shipped model's interface.

The stand-in has the real model's input (224x224x3 RGB, 0..255) and output
(2-unit softmax, benign first), and its metadata file has the same keys, so the
web app's tests exercise the real loading and calling code without the 20 MB model.
"""
from __future__ import annotations

import json
from pathlib import Path

from .classifier import METADATA_FILENAME, MODEL_FILENAME


def write_standin_model(directory, *, threshold: float = 0.5, version: str = "standin-test", red_is_malignant: bool = True) -> Path:
    """Write model.keras + metadata.json. The probability of malignancy rises with
    how much redder than blue the image is, so tests can steer the verdict with colour."""
    import keras
    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inputs = keras.Input((224, 224, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="standin")
    sign = 1.0 if red_is_malignant else -1.0
    kernel = np.zeros((3, 2), dtype="float32")
    kernel[0, 1], kernel[2, 1] = 8.0 * sign, -8.0 * sign  # malignant logit = 8 * (R - B)
    model.get_layer("probabilities").set_weights([kernel, np.zeros(2, dtype="float32")])
    model.save(directory / MODEL_FILENAME)
    metadata = {
        "model_version": version,
        "class_names": ["benign", "malignant"],
        "image_size": 224,
        "preprocessing": "ml.preprocessing.preprocess: RGB, squashed to 224x224, bilinear, 0..255",
        "threshold": threshold,
        "temperature": 1.0,
    }
    (directory / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2))
    return directory
