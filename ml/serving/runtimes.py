"""The two runtimes a model folder is served with: LiteRT (the export, no TensorFlow) and Keras
(the fallback and the reference the export is checked against). Each turns a batch of model inputs
into raw scores, Grad-CAM maps and the gate's feature statistics; ml.serving.classifier chooses one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from ml.artifact import MODEL_FILENAME, ModelUnavailable
from ml.serving import tta
from ml.serving.gate import feature_statistics
from ml.serving.scores import logit


def inference_threads() -> int:
    """LiteRT's threads for one inference: settings.SKINCARE_INFERENCE_THREADS, or where that is 0 the
    CPUs this process may use, at most 4. (LiteRT's own default is one thread: on the 2-core machine
    the network took 9.4 ms on one and 4.9 ms on two, with the same numbers to the last bit, and two
    gunicorn workers under load served as many requests a second either way.)"""

    configured = int(getattr(settings, "SKINCARE_INFERENCE_THREADS", 0) or 0)
    if configured > 0:
        return configured
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, available))


class KerasRuntime:
    """The Keras model itself: the fallback, and the reference the LiteRT export is checked against.

    Where the model has the shipped structure (lower / upper / head), one traced
    function returns the probabilities, the image gate's features and the Grad-CAM
    map of the last convolutional layer in one pass."""

    name = "keras"

    def __init__(self, directory: Path, metadata: dict[str, Any], malignant_index: int, views: tuple[str, ...]):
        import keras  # deferred: the first prediction pays for TensorFlow, nothing else does
        import tensorflow as tf

        try:
            from ml.model.layers import load_keras_model

            self.model = load_keras_model(directory / MODEL_FILENAME)
        except Exception as exc:  # a corrupt or incompatible file is an unavailable model
            raise ModelUnavailable(
                f"No model available: {directory / MODEL_FILENAME} could not be loaded ({exc})"
            ) from exc
        self.malignant_index = malignant_index
        self.views = views
        self.cam_layer = None
        self._analyse = None
        self._feature_map = None
        try:
            lower, upper, head = (self.model.get_layer(n) for n in ("lower", "upper", "head"))
            layer_name = metadata.get("cam_layer", "top_activation")
            feature_model = keras.Model(upper.input, upper.get_layer(layer_name).output)
        except ValueError:
            return  # a model of another shape: probabilities only
        self.cam_layer = layer_name
        benign_index = 1 - malignant_index

        @tf.function(reduce_retracing=True)
        def analyse(x):
            lower_map = lower(x, training=False)
            # The image gate's features: per-channel mean and spread of the lower blocks' map.
            mean, variance = tf.nn.moments(lower_map, axes=[1, 2])
            gate_features = tf.concat([mean, tf.sqrt(variance)], axis=1)
            fmap = feature_model(lower_map, training=False)
            pooled = tf.reduce_mean(fmap, axis=[1, 2])  # exactly the model's GlobalAveragePooling2D
            with tf.GradientTape() as tape:
                tape.watch(pooled)
                probs = head(pooled, training=False)
                eps = 1e-7
                score = tf.math.log(probs[:, malignant_index] + eps) - tf.math.log(probs[:, benign_index] + eps)
            # Grad-CAM: the channel weights are the spatial mean of the score's gradient with
            # respect to the feature map, which through a global average pool is dscore/dpooled / (H*W).
            # The ReLU comes after the views are averaged (ml/serving/tta.py).
            weights = tape.gradient(score, pooled)
            cam = tf.einsum("bhwk,bk->bhw", fmap, weights)
            return score, gate_features, cam

        self._analyse = analyse
        self._feature_map = lambda x: feature_model(lower(x, training=False), training=False)

    def feature_activity(self, batch):
        return np.asarray(self._feature_map(np.asarray(batch, dtype=np.float32))).sum(axis=-1)

    def analyse(self, batch, views=None):
        n = len(batch)
        views = views or self.views
        x = tta.expand(np.asarray(batch, dtype=np.float32), views)
        if self._analyse is None:
            p = self.model(x, training=False).numpy()[:, self.malignant_index]
            return tta.combine(logit(p), None, views, n)[0], None, None
        score, features, cam = self._analyse(x)
        probability, cams = tta.combine(score.numpy(), cam.numpy(), views, n)
        return probability, features.numpy()[:n], cams


class LiteRTRuntime:
    """The export made for inference (ml/training/export.py): LiteRT runs the convolutional
    backbone, numpy runs the small head, its gradient for Grad-CAM, and the gate's
    feature statistics. No TensorFlow is imported on this path."""

    name = "litert"

    def __init__(self, directory: Path, metadata: dict[str, Any], malignant_index: int, views: tuple[str, ...]):
        from ai_edge_litert.interpreter import Interpreter

        spec = metadata["litert"]
        self.threads = inference_threads()
        self.interpreter = Interpreter(model_path=str(directory / spec["model"]), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outputs = {int(d["shape"][-1]): d["index"] for d in self.interpreter.get_output_details()}
        self.feature_index = outputs[int(spec["feature_channels"])]
        self.lower_index = outputs[int(spec["lower_channels"])]
        with np.load(directory / spec["head"]) as head:
            self.head = {k: head[k].astype(np.float32) for k in head.files}
        h = self.head
        h["bn_scale"] = h["bn_gamma"] / np.sqrt(h["bn_variance"] + h["bn_epsilon"])
        self.direction = h["out_kernel"][:, malignant_index] - h["out_kernel"][:, 1 - malignant_index]
        self.malignant_index = malignant_index
        self.views = views
        self.cam_layer = metadata.get("cam_layer", "top_activation")

    def _run(self, image):
        self.interpreter.set_tensor(self.input_index, image[None].astype("float32"))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.feature_index)[0], self.interpreter.get_tensor(self.lower_index)[0]

    def feature_activity(self, batch):
        return np.stack([self._run(image)[0].sum(axis=-1) for image in np.asarray(batch, dtype=np.float32)])

    def analyse(self, batch, views=None):

        h = self.head
        n = len(batch)
        views = views or self.views
        scores, features, cams = [], [], []
        for image in tta.expand(np.asarray(batch, dtype=np.float32), views):  # batch size one: the serving case
            fmap, lower_map = self._run(image)
            if len(features) < n:  # the gate reads the image as it is: the first view
                features.append(feature_statistics(lower_map[None])[0])
            fmap_flat = fmap.reshape(-1, fmap.shape[-1])
            pooled = fmap_flat.mean(axis=0)
            pre = pooled @ h["dense_kernel"] + h["dense_bias"]
            normed = (np.maximum(pre, 0.0) - h["bn_mean"]) * h["bn_scale"] + h["bn_beta"]
            logits = (normed @ h["out_kernel"] + h["out_bias"]).astype(np.float64)
            # log p(malignant) - log p(benign) of the softmax: the logits' difference.
            scores.append(logits[self.malignant_index] - logits[1 - self.malignant_index])
            # d(logit_malignant - logit_benign)/d(pooled), by hand through BN, ReLU and Dense.
            grad = h["dense_kernel"] @ ((pre > 0) * h["bn_scale"] * self.direction)
            cams.append((fmap_flat @ grad).reshape(fmap.shape[:2]))
        probability, cam = tta.combine(np.array(scores), np.array(cams, dtype=np.float32), views, n)
        return probability, np.array(features, dtype=np.float32), cam
