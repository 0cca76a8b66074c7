"""The one way to load a saved model.

Every reader of a model folder (serving's Keras fallback, the export, the gate fitting, the
benchmark) loads through :func:`load_keras_model`, so a layer of our own, if one is ever added,
is registered in one place before any model file is read.
"""

from __future__ import annotations

import keras


def load_keras_model(path):
    """keras.models.load_model(path, compile=False)."""
    return keras.models.load_model(path, compile=False)
