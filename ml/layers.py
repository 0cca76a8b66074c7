"""Keras layers of our own that a saved model holds, and the one way to load a saved model.

A model.keras file names its layers' classes; Keras rebuilds those of its own and refuses the
rest unless they are registered. :func:`load_keras_model` imports this module (registering
them) before loading, so every reader of a model folder (serving, export, the gate, the soup,
the benchmark) loads the same way, whichever of these layers a model was trained with.
"""
from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skincare")
class ShadesOfGrey(keras.layers.Layer):
    """Shades-of-grey colour constancy (Finlayson & Trezzi 2004), as the ISIC challenges' entrants
    used it: each image's illuminant is estimated per channel as the Minkowski p-norm mean of its
    pixels (p = 6: between the grey world, p = 1, and max-RGB, p = infinity), and each channel is
    divided by it, scaled so that a grey illuminant leaves the image as it is. A dermoscope's light
    and camera tint every image alike; dividing that out lets the network see the lesion's colours
    rather than the device's. Plain RGB in 0..255 in and out, so it sits before the backbone's own
    input scaling, inside the model: training, the cached feature maps, evaluation and the LiteRT
    export all apply it, and nothing outside the model has to remember to."""

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)

    def call(self, images):
        x = ops.clip(ops.cast(images, "float32"), 0.0, 255.0) / 255.0
        illuminant = ops.power(ops.mean(ops.power(x, self.power), axis=(1, 2), keepdims=True) + 1e-12, 1.0 / self.power)
        norm = ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gain = norm / (illuminant * math.sqrt(3.0))  # 1 / (unit illuminant * sqrt(3)): 1 for a grey one
        return ops.clip(x * gain, 0.0, 1.0) * 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}


def load_keras_model(path):
    """keras.models.load_model(path, compile=False), with this module's layers registered."""
    return keras.models.load_model(path, compile=False)
