"""The network and its augmentation in Keras alone, without TensorFlow: the same definitions
train here (Keras on TensorFlow) and on an accelerator under Keras's JAX or PyTorch backend
(ml/accelerated.py), so weights move between the two one to one."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ml.training imports Django through ml.classifier; this module must not
    from .training import TrainConfig


# ---------------------------------------------------------------- augmentation
def build_augmenter(seed: int):
    """Augmentation as Keras layers: imitate other dermoscopes and framings."""
    import keras
    from keras import layers

    class RandomVignette(layers.Layer):
        """Darken the corners, as many dermoscopes do, by a random amount."""

        def __init__(self, max_strength=0.6, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.max_strength = max_strength
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=True):
            from keras import ops

            shape = ops.shape(images)
            h, w = shape[1], shape[2]
            yy = ops.linspace(-1.0, 1.0, h)[:, None]
            xx = ops.linspace(-1.0, 1.0, w)[None, :]
            radius = ops.sqrt(yy ** 2 + xx ** 2) / math.sqrt(2.0)
            strength = keras.random.uniform((shape[0], 1, 1, 1), 0.0, self.max_strength, seed=self.seed_generator)
            apply = ops.cast(keras.random.uniform((shape[0], 1, 1, 1), seed=self.seed_generator) < 0.5, "float32")
            mask = 1.0 - apply * strength * ops.clip((radius[None, :, :, None] - 0.55) / 0.45, 0.0, 1.0) ** 2
            return images * mask

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(height_factor=(-0.35, 0.1), width_factor=(-0.35, 0.1), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed + 3),
            layers.RandomBrightness(0.25, value_range=(0, 255), seed=seed + 4),
            layers.RandomContrast(0.3, seed=seed + 5),
            layers.RandomSaturation((0.3, 0.7), seed=seed + 6),
            layers.RandomHue(0.04, value_range=(0, 255), seed=seed + 7),
            RandomVignette(seed=seed + 8),
        ],
        name="augmentation",
    )


# ---------------------------------------------------------------- the network
class Network:
    """The backbone split at the fine-tuning boundary, and the classification head.

    lower: image -> feature map at the boundary (frozen, cached)
    upper: feature map -> pooled 1280-d features (fine-tuned in phase 2)
    head: pooled features -> 2-unit softmax
    """

    def __init__(self, config: "TrainConfig"):
        import keras
        from keras import layers

        self.config = config
        from .backbone import LITE_BACKBONES

        if config.backbone in LITE_BACKBONES:
            from .backbone import Lite0Layers, load_lite0_weights

            variant = LITE_BACKBONES[config.backbone]
            parts = Lite0Layers(getattr(config, "padding", "tf"), variant)
            image = keras.Input((224, 224, 3), name="image")
            cut = config.finetune_from_block
            boundary = parts.apply_blocks(parts.stem(_colour_constancy(image, config)), 0, cut)
            full_backbone = keras.Model(image, layers.GlobalAveragePooling2D(name="avg_pool")(parts.top(parts.apply_blocks(boundary, cut))))
            load_lite0_weights(full_backbone, config.weights, variant=variant)
            self.lower = keras.Model(image, boundary, name="lower")
            map_in = keras.Input(parts.block_output_shape(cut), name="feature_map")
            self.upper = keras.Model(map_in, full_backbone.get_layer("avg_pool")(parts.top(parts.apply_blocks(map_in, cut))),
                                     name="upper")
            self.feature_layer = "top_activation"
        elif config.backbone == "efficientnetb0":
            if getattr(config, "colour_constancy", "none") != "none":
                raise ValueError("--colour-constancy: only the efficientnet-lite backbones have it")
            base = keras.applications.EfficientNetB0(include_top=False, weights=config.weights or "imagenet",
                                                     input_shape=(224, 224, 3))
            # keras.applications' B0 does its own input scaling and takes 0..255 RGB like Lite0.
            cut_layer = base.get_layer(config.extra.get("cut_layer", "block5a_expand_activation"))
            self.lower = keras.Model(base.input, cut_layer.output, name="lower")
            map_in = keras.Input(tuple(cut_layer.output.shape[1:]), name="feature_map")
            self.upper = _clone_from(base, cut_layer, map_in)
            self.feature_layer = "top_activation"
        else:
            raise ValueError(f"unknown backbone {config.backbone!r}: choose {', '.join(LITE_BACKBONES)} or efficientnetb0")
        self.lower.trainable = False
        features = keras.Input((self.upper.output.shape[-1],), name="features")
        x = layers.Dense(config.dense_units, activation="relu", name="head_dense")(features)
        x = layers.Dropout(config.dropout, name="head_dropout")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
        out = layers.Dense(2, activation="softmax", name="probabilities")(x)
        self.head = keras.Model(features, out, name="head")
        self.diagnosis = None

    def add_diagnosis_head(self, n_classes: int) -> None:
        """A second, training-only output beside the head: the dataset's finer diagnosis (HAM10000's seven
        dx codes) from the same pooled features, a softmax over n_classes. Serving never sees it; it asks the
        backbone to tell the kinds of lesion apart, not only the two groups the head is scored on."""
        import keras
        from keras import layers

        features = keras.Input((self.upper.output.shape[-1],), name="features")
        out = layers.Dense(n_classes, activation="softmax", name="diagnosis_probabilities")(features)
        self.diagnosis = keras.Model(features, out, name="diagnosis")

    def training_model(self):
        """image -> {"head": probabilities, "diagnosis": diagnosis probabilities}, for fine-tuning with the
        diagnosis head (weights shared with the parts, so full_model() serves what this trains)."""
        import keras

        image = keras.Input((224, 224, 3), name="image")
        pooled = self.upper(self.lower(image))
        return keras.Model(image, {"head": self.head(pooled), "diagnosis": self.diagnosis(pooled)}, name="multitask")

    def compile_for_training(self, model, optimizer, metrics, diagnosis_weight: float = 0.0) -> None:
        """Compile `model` (full_model(), or training_model() where there is a diagnosis head) with the
        head's binary cross-entropy, plus the diagnosis head's cross-entropy weighted by diagnosis_weight.
        The metrics are the head's alone."""
        if self.diagnosis is None:
            model.compile(optimizer, "binary_crossentropy", metrics=metrics)
        else:
            model.compile(optimizer, loss={"head": "binary_crossentropy", "diagnosis": "categorical_crossentropy"},
                          loss_weights={"head": 1.0, "diagnosis": diagnosis_weight}, metrics={"head": metrics})

    def upper_with_head(self):
        import keras

        map_in = keras.Input(self.upper.input.shape[1:], name="feature_map")
        return keras.Model(map_in, self.head(self.upper(map_in)), name="finetune")

    def full_model(self):
        """image -> probabilities, one model for serving (weights shared with the parts)."""
        import keras

        image = keras.Input((224, 224, 3), name="image")
        return keras.Model(image, self.head(self.upper(self.lower(image))), name="skincare_classifier")

    def set_upper_trainable(self, trainable: bool) -> None:
        self._set_trainable(self.upper, trainable)

    def set_all_trainable(self, trainable: bool) -> None:
        self._set_trainable(self.lower, trainable)
        self._set_trainable(self.upper, trainable)

    @staticmethod
    def _set_trainable(model, trainable: bool) -> None:
        import keras

        model.trainable = trainable
        for layer in model.layers:
            # BatchNormalization stays in inference mode: small batches would wreck its statistics.
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


# ---------------------------------------------------------------- the diagnosis head's bookkeeping
def diagnosis_indices(details):
    """(the finer diagnoses, sorted; each image's index among them) from the images' diagnoses (a sample's
    `detail`: HAM10000's dx), or None where some image has none or there are fewer than three."""
    import numpy as np

    classes = sorted(set(details or [""]))
    if "" in classes or len(classes) < 3:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[d] for d in details])


# With a diagnosis head Keras names the logs by output ("head_loss", "head_accuracy") and "loss" is the
# total; histories keep the head's figures under the one-output names, so runs with and without it read
# alike, and add total_loss and diagnosis_loss.
_MULTITASK_LOG_NAMES = {"loss": "total_loss", "head_loss": "loss", "head_accuracy": "accuracy", "head_auc": "auc"}


def head_logs(logs: dict, multitask: bool) -> dict:
    """Keras logs (or a history) under the names a one-output model's would have (see above)."""
    return {_MULTITASK_LOG_NAMES.get(k, k): v for k, v in logs.items()} if multitask else dict(logs)


def _colour_constancy(image, config):
    """The image, through the colour-constancy layer that config.colour_constancy names (ml.layers)."""
    from .backbone import COLOUR_CONSTANCY
    from .layers import ShadesOfGrey

    method = getattr(config, "colour_constancy", "none")
    if method not in COLOUR_CONSTANCY:
        raise ValueError(f"unknown colour constancy {method!r}: choose one of {', '.join(COLOUR_CONSTANCY)}")
    return image if method == "none" else ShadesOfGrey(name="colour_constancy")(image)


def _clone_from(base, cut_layer, new_input):
    """Rebuild the part of a functional model after `cut_layer` on a new input."""
    import keras

    tensors = {id(cut_layer.output): new_input}
    started = False
    for layer in base.layers:
        if layer is cut_layer:
            started = True
            continue
        if not started:
            continue
        node = layer._inbound_nodes[0]
        args = [tensors[id(t)] for t in node.input_tensors]
        out = layer(args if len(args) > 1 else args[0])
        tensors[id(layer.output)] = out
    return keras.Model(new_input, tensors[id(base.output)], name="upper")
