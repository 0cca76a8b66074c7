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
from typing import Union

import numpy as np
from PIL import Image, ImageOps

IMAGE_SIZE = 224
# Squash rather than crop: HAM10000 ships as 600x450 originals squashed to a
# square, so squashing everything else keeps the aspect distortion identical.
RESAMPLE = Image.Resampling.BILINEAR

ImageSource = Union[bytes, bytearray, str, os.PathLike, Image.Image, io.IOBase]


def open_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        return Image.open(Path(source))
    return Image.open(source)


def load_rgb(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Decode any Pillow-readable image into an upright 8-bit RGB image.

    With draft_size, a large JPEG is decoded directly at a reduced scale (1/2, 1/4, 1/8)
    that still covers draft_size x draft_size: several times faster than decoding every
    pixel only to throw most of them away in the resize."""
    image = open_image(source)
    if draft_size and image.format == "JPEG" and min(image.size) >= 2 * draft_size:
        image.draft("RGB", (draft_size, draft_size))
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
    return image.convert("RGB")


def resize_rgb(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Squash an RGB image to size x size."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), RESAMPLE)


def preprocess(source: ImageSource, size: int = IMAGE_SIZE) -> np.ndarray:
    """Image bytes/path/PIL image -> float32 array (size, size, 3), RGB in 0..255."""
    image = resize_rgb(load_rgb(source, draft_size=size), size)
    return np.asarray(image, dtype=np.float32)
