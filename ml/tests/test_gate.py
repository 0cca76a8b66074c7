"""The image gate's own pieces. (The gate on real images and junk: ml/tests/test_shipped_model.py.)"""

import numpy as np

from ml.serving.gate import quality_measures
from ml.training.gate_fitting import random_sharpness


def _lesion_like(seed=0):
    """A smooth skin-coloured image with a darker blob: enough structure to sharpen or soften."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    blob = np.exp(-(((yy - 112) ** 2 + (xx - 100) ** 2) / (2 * 40.0**2)))
    img = np.stack([200 - 90 * blob, 160 - 90 * blob, 140 - 80 * blob], axis=-1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.float32)


def test_random_sharpness_sharpens_and_softens_within_range():
    x = np.stack([_lesion_like(0), _lesion_like(1)])
    before = [quality_measures(im)["sharpness"] for im in x]
    sharper = random_sharpness(x, np.random.default_rng(0), low=2.0, high=2.01)
    softer = random_sharpness(x, np.random.default_rng(0), low=-0.8, high=-0.79)
    for i in range(2):
        assert quality_measures(sharper[i])["sharpness"] > 3 * before[i]
        assert quality_measures(softer[i])["sharpness"] < 0.5 * before[i]
    assert sharper.min() >= 0 and sharper.max() <= 255 and sharper.shape == x.shape
    # the colour of the lesion and the skin is kept: only edges change
    assert np.abs(sharper.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max() < 3


def test_random_sharpness_draws_an_amount_per_image():
    x = np.stack([_lesion_like(0)] * 4)
    out = random_sharpness(x, np.random.default_rng(3))
    sharpness = [quality_measures(im)["sharpness"] for im in out]
    assert len(set(np.round(sharpness, 3))) == 4
