"""Helpers for tests: a tiny stand-in model artifact with the shipped model's interface.

The stand-in has the real model's input (IMAGE_SIZE x IMAGE_SIZE x 3 RGB, 0..255) and output
(2-unit softmax, benign first), and its metadata file has the same keys, so the
web app's tests exercise the real loading and calling code without the 20 MB model.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from ml.artifact import CLASS_NAMES, IMAGE_SIZE
from ml.serving.classifier import METADATA_FILENAME, MODEL_FILENAME
from ml.serving.tta import ALL_VIEWS, CLOSE_CALL_KEY

QUALITY_ONLY_GATE = {
    # Image-quality limits only (no feature reference): enough for tests of the "not assessed" path.
    "min_brightness": 40.0,
    "max_brightness": 215.0,
    "min_contrast": 4.0,
    "max_dark_share": 0.85,
    "max_bright_share": 0.6,
    "min_sharpness": 0.5,
    "min_colourfulness": 0.0,
}


def write_standin_model(
    directory,
    *,
    threshold: float = 0.5,
    uncertain_threshold: float | None = None,
    version: str = "standin-test",
    red_is_malignant: bool = True,
    gate: bool = False,
    boundary_margin: float | None = None,
    close_call_check: bool = False,
) -> Path:
    """Write model.keras + metadata.json with the shipped model's structure (lower / upper / head
    sub-models, a `top_activation` feature layer), so Grad-CAM works on it too.

    The probability of malignancy rises with how much redder than blue the image is
    (logit = 8 * (R - B) on 0..1 colours), so tests can steer the verdict with colour, and
    the heat map lands where the red is. `gate=True` adds image-quality limits: a uniform
    image is then "not assessed". `boundary_margin` (logits) marks results that close to a boundary
    as "close to a boundary", as a trained model's fitted margin does; `close_call_check` also scores
    those again in all eight views (ml/serving/tta.py), with the model's own calibration."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    lower = keras.Model(
        image, keras.layers.AveragePooling2D(32)(keras.layers.Rescaling(1.0 / 255.0)(image)), name="lower"
    )
    fmap = keras.Input((7, 7, 3), name="feature_map")
    top = keras.layers.ReLU(name="top_activation")(fmap)
    upper = keras.Model(fmap, keras.layers.GlobalAveragePooling2D(name="avg_pool")(top), name="upper")
    features = keras.Input((3,), name="features")
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    head = keras.Model(features, dense(features), name="head")
    model = keras.Model(image, head(upper(lower(image))), name="standin")
    sign = 1.0 if red_is_malignant else -1.0
    kernel = np.zeros((3, 2), dtype="float32")
    kernel[0, 1], kernel[2, 1] = 8.0 * sign, -8.0 * sign
    dense.set_weights([kernel, np.zeros(2, dtype="float32")])
    model.save(directory / MODEL_FILENAME)
    metadata = {
        "model_version": version,
        "class_names": list(CLASS_NAMES),
        "image_size": IMAGE_SIZE,
        "preprocessing": "ml.preprocessing.preprocess: RGB, squashed to 224x224, bilinear, 0..255",
        "threshold": threshold,
        "uncertain_threshold": threshold if uncertain_threshold is None else uncertain_threshold,
        "temperature": 1.0,
        "logit_offset": 0.0,
        "cam_layer": "top_activation",
    }
    if boundary_margin is not None:
        metadata["boundary_margin"] = {"logit": boundary_margin, "rule": "set by the test"}
    if close_call_check:
        metadata[CLOSE_CALL_KEY] = {"views": list(ALL_VIEWS), "temperature": 1.0, "logit_offset": 0.0}
    if gate:
        metadata["gate"] = dict(QUALITY_ONLY_GATE)
    (directory / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2))
    return directory
