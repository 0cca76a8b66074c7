"""Fitting the image gate (ml.serving.gate) of a trained model on its own training images.

The reference holds each training image as it is and once through the training augmentation
(ml.model.augmentation) followed by a random sharpening or softening, so that a lesion from
another dermoscope stays familiar while a photo of something else does not.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from ml.artifact import MODEL_FILENAME, read_metadata, write_metadata
from ml.model.augmentation import augment
from ml.model.layers import load_keras_model
from ml.preprocessing import preprocess
from ml.serving.gate import REFERENCE_IMAGES, Gate, feature_statistics, quality_measures


def random_sharpness(images, rng: np.random.Generator, low: float = -0.8, high: float = 4.0) -> np.ndarray:
    """Unsharp masking by a random amount per image: x + a (x - blur(x)), a in [low, high).
    Positive a sharpens (a crisper dermoscope), negative a blends towards the blur (a softer one)."""
    x = np.asarray(images, dtype=np.float32)
    blurred = gaussian_filter(x, sigma=(0, 1.0, 1.0, 0))
    amount = rng.uniform(low, high, size=(len(x), 1, 1, 1)).astype(np.float32)
    return np.clip(x + amount * (x - blurred), 0, 255)


def fit_for_model(model_dir, train_paths, val_paths, log=print, seed: int = 0) -> dict[str, float]:
    """Fit the gate of a saved model on its training images (as they are and augmented),
    choose the distance limit on its validation images, and save both beside the model."""
    model_dir = Path(model_dir)
    lower = load_keras_model(model_dir / MODEL_FILENAME).get_layer("lower")
    augment_rng = np.random.default_rng(seed + 1000)
    rng = random.Random(seed)
    train_paths = list(train_paths)
    if len(train_paths) > REFERENCE_IMAGES:
        train_paths = rng.sample(train_paths, REFERENCE_IMAGES)

    sharpness_rng = np.random.default_rng(seed)

    def collect(paths, quality=None):
        """Feature statistics of each image as it is, and augmented with its sharpness changed too."""
        features = []
        for start in range(0, len(paths), 32):
            x = np.stack([preprocess(p) for p in paths[start : start + 32]])
            if quality is not None:
                quality.extend(quality_measures(img) for img in x)
            augmented = random_sharpness(np.stack([augment(img, augment_rng) for img in x]), sharpness_rng)
            for batch in (x, augmented):
                features.append(feature_statistics(lower(batch, training=False)))
        return np.concatenate(features)

    log(f"fitting the image gate on {len(train_paths)} training images (and an augmented view of each) ...")
    quality: list[dict[str, float]] = []
    reference = collect(train_paths, quality)
    gate = Gate.fit(reference, quality, collect(list(val_paths)))
    limits = gate.save(model_dir)
    meta = read_metadata(model_dir)
    meta["gate"] = limits
    write_metadata(model_dir, meta)
    log("gate limits: " + ", ".join(f"{k} {v:.3g}" for k, v in limits.items()))
    return limits
