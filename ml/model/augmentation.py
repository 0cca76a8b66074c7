"""Training augmentation: other dermoscopes' colour, exposure, framing and vignetting.

NumPy and SciPy, one image at a time, outside the compiled training step, so the same code
augments on every Keras backend (TensorFlow here, JAX on a GPU machine: with Keras's
augmentation layers inside the step, JAX took about 1.2 s a step on an H200 against 17 ms
without them). Used by the trainer's balanced batches (ml.training.batches) and by the
image gate's reference (ml.training.gate_fitting).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _affine_matrix(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) mapping output pixel coordinates to input ones: a rotation by up to half a
    turn, a zoom of 0.65..1.1 on each axis (below 1 magnifies), a shift of up to 8 % each way;
    in one map."""
    angle = rng.uniform(-np.pi, np.pi)
    zoom = rng.uniform(0.65, 1.1, size=2)
    shift = rng.uniform(-0.08, 0.08, size=2) * size
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.diag(zoom)
    centre = np.array([(size - 1) / 2.0] * 2)
    return matrix, centre - matrix @ centre - shift


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented view of an (H, W, 3) image in 0..255, as float32 in 0..255."""
    x = image.astype(np.float32)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.5:
        x = x[::-1]
    matrix, offset = _affine_matrix(rng, x.shape[0])
    x = np.stack(
        [ndimage.affine_transform(x[..., ch], matrix, offset, order=1, mode="mirror") for ch in range(3)], axis=-1
    )
    x = x + rng.uniform(-0.25, 0.25) * 255.0  # brightness
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * rng.uniform(0.7, 1.3) + mean, 0.0, 255.0)  # contrast
    s = rng.uniform(0.3, 0.7)  # saturation (HSV's S) times s / (1 - s), 0.43..2.3, at most 1; hue and value kept
    value = x.max(axis=-1, keepdims=True)
    saturation = (value - x.min(axis=-1, keepdims=True)) / np.maximum(value, 1e-6)
    x = value - (value - x) * np.minimum(s / (1.0 - s), 1.0 / np.maximum(saturation, 1e-6))
    theta = rng.uniform(-0.04, 0.04) * 2.0 * np.pi  # hue: a rotation about the grey axis
    k = np.ones(3, dtype=np.float32) / np.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=np.float32)
    rotation = np.eye(3) * np.cos(theta) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    x = np.clip(x @ rotation.T.astype(np.float32), 0.0, 255.0)
    if rng.random() < 0.5:  # vignette: darker corners, as many dermoscopes have
        h, w = x.shape[:2]
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        radius = np.sqrt(yy**2 + xx**2) / np.sqrt(2.0)
        x = x * (1.0 - rng.uniform(0.0, 0.6) * np.clip((radius - 0.55) / 0.45, 0.0, 1.0) ** 2)[..., None]
    return x.astype(np.float32)
