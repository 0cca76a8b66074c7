"""The one path from image bytes to model input.

Training, evaluation and serving all call :func:`preprocess`, so the pixels the
model sees in the clinic are produced exactly as the pixels it was trained on.
The backbone's own input scaling ((x - 127) / 128 for EfficientNet-Lite) lives
inside the Keras model, so the array returned here is plain RGB in 0..255.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from ml.artifact import IMAGE_SIZE

# Squash rather than crop: HAM10000 ships as 600x450 originals squashed to a
# square, so squashing everything else keeps the aspect distortion identical.
RESAMPLE = Image.Resampling.BILINEAR

ImageSource = bytes | bytearray | str | os.PathLike | Image.Image | io.IOBase


def open_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        return Image.open(Path(source))
    return Image.open(source)


def load_rgb(source: ImageSource) -> Image.Image:
    """Decode any Pillow-readable image, every pixel, into an upright 8-bit RGB image.

    Always at full scale: a JPEG decoded at reduced scale (Pillow's draft mode) gives other
    pixels than the same photo uploaded, which is decoded fully, so evaluation would measure a
    model the clinic does not get."""
    image = open_image(source)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale down to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float32)
        peak = max(float(arr.max()), 1.0)
        image = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, not black (black reads as a dark lesion).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    # exif_transpose returned a copy already: an RGB image needs no second one (12 MP: 36 MB).
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_rgb(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Squash an RGB image to size x size."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), RESAMPLE)


def _percentile(values: np.ndarray, q: float) -> float:
    """np.percentile's default (linear) percentile of a 1-d array, by partial sort: several times
    faster on the small arrays of the field-of-view search, which runs in every request."""
    n = len(values)
    position = q / 100.0 * (n - 1)
    lo = int(position)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (position - lo) * (part[hi] - part[lo]))


def fill_outside_field_of_view(
    pixels: np.ndarray,
    original_size: tuple[int, int],
    dark_ratio: float = 0.6,
    max_corner_ratio: float = 0.75,
    ring: float = 0.04,
) -> np.ndarray:
    """Paint the dark corners that a dermoscope leaves around its round field of view with skin colour.

    Many dermoscopes (PH2's among them) show the skin through a circle and leave the corners
    dark grey or black; most HAM10000 images have none. A model trained on HAM10000 then reads
    the dark corners as a feature of the lesion (its Grad-CAM lit them up). This step applies
    only where the four corners are dark against the skin of the inner field (on average below
    dark_ratio of its brightness, none above max_corner_ratio): about 9 in 10 PH2 images and
    1.5 in 100 HAM10000 images, measured on their pixels alone (no labels). It finds the edge of the
    field from rings around the centre (distances in the original image's pixels, so the circle
    survives the squash to a square), and blends what lies beyond it, by how dark it is, into the
    median colour of the skin just inside the edge. Other images come back unchanged."""
    h_px, w_px = pixels.shape[:2]
    width, height = original_size
    luminance = pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587 + pixels[..., 2] * 0.114
    cy, cx = max(h_px // 10, 1), max(w_px // 10, 1)
    ys = (np.arange(h_px) + 0.5) / h_px * height - height / 2
    xs = (np.arange(w_px) + 0.5) / w_px * width - width / 2
    # 1.0 = the largest circle centred in the original image
    radius = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2) / (min(width, height) / 2)
    # the skin's brightness: bright pixels of the inner field (a lesion is darker than skin)
    skin_level = _percentile(luminance[radius < 0.9], 90)
    if skin_level < 60:
        return pixels  # too dark overall to tell corners from the rest (the image gate judges it)
    corners = [
        float(c.mean())
        for c in (luminance[:cy, :cx], luminance[:cy, -cx:], luminance[-cy:, :cx], luminance[-cy:, -cx:])
    ]
    if np.mean(corners) >= dark_ratio * skin_level or max(corners) >= max_corner_ratio * skin_level:
        return pixels
    edge = 0.5
    for r0 in np.arange(0.5, float(radius.max()) + ring, ring):
        in_ring = (radius >= r0) & (radius < r0 + ring)
        if not in_ring.any() or _percentile(luminance[in_ring], 90) < 0.7 * skin_level:
            break
        edge = r0 + ring
    darkness = np.clip((0.8 * skin_level - ndimage.uniform_filter(luminance, 5)) / (0.4 * skin_level), 0.0, 1.0)
    # The surround is grey to black; a lesion that reaches the edge of the field is coloured, and stays.
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    chroma = ndimage.uniform_filter(np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b), 5)
    greyness = np.clip((40.0 - chroma) / 20.0, 0.0, 1.0)
    weight = darkness * greyness * np.clip((radius - (edge - 0.04)) / 0.08, 0.0, 1.0)
    near_edge = (radius >= edge - 0.3) & (radius < edge - 0.05) & (weight == 0)
    skin = np.median(pixels[near_edge] if near_edge.sum() > 50 else pixels[radius < edge], axis=0)
    weight = ndimage.uniform_filter(weight, 3)
    painted = weight > 0
    out = pixels.astype(np.float32)  # a copy: the caller's array stays as it was
    w = weight[painted][:, None]
    out[painted] = (pixels[painted] * (1.0 - w) + skin * w).astype(np.float32)
    return out


def preprocess(source: ImageSource, size: int = IMAGE_SIZE) -> np.ndarray:
    """Image bytes/path/PIL image -> float32 array (size, size, 3), RGB in 0..255.

    Decode, squash to size x size, and paint a dermoscope's dark corners with skin colour
    (:func:`fill_outside_field_of_view`)."""
    image = load_rgb(source)
    pixels = np.asarray(resize_rgb(image, size), dtype=np.float32)
    return fill_outside_field_of_view(pixels, image.size)


def preprocess_uint8(source: ImageSource, size: int = IMAGE_SIZE) -> np.ndarray:
    """:func:`preprocess` rounded to uint8, the form training holds its images in.

    Rounded, not truncated: the dark corners are blended in float, and a cast alone would make
    training's pixels up to one level darker there than serving's."""
    return np.clip(np.rint(preprocess(source, size)), 0, 255).astype(np.uint8)
