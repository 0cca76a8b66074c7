"""Grad-CAM heat maps drawn over the image, in numpy and Pillow (no matplotlib on the request path)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# A compact "jet"-like colour ramp: blue (cold) -> cyan -> yellow -> red (hot).
_STOPS = np.array([[0.0, 0, 0, 160], [0.35, 0, 200, 255], [0.65, 255, 230, 0], [1.0, 220, 0, 0]], dtype=np.float32)


def normalise_cam(cam) -> np.ndarray:
    """A Grad-CAM map scaled so its peak is 1 (an all-zero map stays zero)."""
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def colourise(cam: np.ndarray) -> np.ndarray:
    """(H, W) values in 0..1 -> (H, W, 3) uint8 colours."""
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0, 1)
    out = np.empty(cam.shape + (3,), dtype=np.float32)
    for c in range(3):
        out[..., c] = np.interp(cam, _STOPS[:, 0], _STOPS[:, c + 1])
    return out.astype(np.uint8)


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a coarse (7x7) map to (width, height) `size`."""
    img = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8), "L").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45, max_side: int = 640) -> Image.Image:
    """The image with the heat map blended over it, at most max_side pixels wide or tall."""
    image = image.convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    heat = upsample(cam, image.size)
    colours = colourise(heat).astype(np.float32)
    base = np.asarray(image, dtype=np.float32)
    weight = (alpha * np.clip(heat * 1.5, 0, 1))[..., None]  # cold areas stay mostly visible
    blended = base * (1 - weight) + colours * weight
    return Image.fromarray(blended.astype(np.uint8), "RGB")


def heat_inside_mask(cam: np.ndarray, mask_path) -> tuple[float, float]:
    """(share of the heat map's mass inside the lesion mask, the lesion's share of the image).

    The model saw the image squashed to a square, so the map is stretched back over the
    whole mask, which has the original image's size."""
    with Image.open(mask_path) as m:
        mask = np.asarray(m.convert("L"), dtype=np.float32) > 127
    heat = upsample(normalise_cam(cam), (mask.shape[1], mask.shape[0]))
    total = float(heat.sum())
    return (float(heat[mask].sum()) / total if total > 0 else 0.0), float(mask.mean())
