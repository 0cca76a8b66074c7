"""Heat maps drawn over the image, in numpy and Pillow (no matplotlib on the request path).

Two ways to say where the model looked (settings.SKINCARE_HEATMAP):

* "gradcam" (the default): Grad-CAM of the last feature map for the malignant class, computed with the
  score itself (ml/serving/runtimes.py). Free, but on validation images it lands on the lesion no more
  than chance would (docs/experiments.md, "Where the heat map lands"): each cell of a 7x7 or 8x8 map
  sees most of the image, and the gradient there mostly lights up the skin around a lesion.
* "occlusion": cover each of OCCLUSION_GRID x OCCLUSION_GRID patches in turn with the colour of the
  photo's frame (the skin) and measure how far the malignancy score falls. It asks the model itself
  which part of the photo its answer rests on, at the cost of OCCLUSION_GRID**2 more looks (about 0.4 s on
  2 CPUs).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HEATMAP_METHODS = ("gradcam", "occlusion")
OCCLUSION_GRID = 8  # patches per side: 64 more looks; each patch an eighth of the image's side
FRAME = 8  # pixels: the band around the model input whose median colour stands for the skin

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
    return heat_share_inside(cam, mask), float(mask.mean())


def heat_share_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """The share of a heat map's mass inside a boolean (H, W) mask, the map stretched over it as it is drawn
    over the photo; 0 for an empty map."""
    heat = upsample(normalise_cam(cam), (mask.shape[1], mask.shape[0]))
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 0.0


def skin_colour(image: np.ndarray) -> np.ndarray:
    """The median colour of a preprocessed (S, S, 3) image's outer band: the skin around the lesion
    (a dermoscope's dark corners are already painted with skin colour by ml.preprocessing)."""
    image = np.asarray(image, dtype=np.float32)
    band = np.concatenate(
        [
            image[:FRAME].reshape(-1, 3),
            image[-FRAME:].reshape(-1, 3),
            image[:, :FRAME].reshape(-1, 3),
            image[:, -FRAME:].reshape(-1, 3),
        ]
    )
    return np.median(band, axis=0)


def patch_edges(size: int, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """Where the grid's patches start and end along a side of `size` pixels (grid + 1 edges)."""
    return np.linspace(0, size, grid + 1).astype(int)


def occluded_images(image: np.ndarray, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """(grid * grid, S, S, 3): the image with one patch covered in skin colour, row by row."""
    image = np.asarray(image, dtype=np.float32)
    edges, skin = patch_edges(image.shape[0], grid), skin_colour(image)
    out = np.repeat(image[None], grid * grid, axis=0)
    for i in range(grid):
        for j in range(grid):
            out[i * grid + j, edges[i] : edges[i + 1], edges[j] : edges[j + 1]] = skin
    return out


def occlusion_map(score: float, occluded_scores, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """(grid, grid): how far the malignancy score (a logit) falls with each patch covered; patches whose
    cover leaves it as it is, or raises it, get no heat."""
    drop = float(score) - np.asarray(occluded_scores, dtype=np.float64).reshape(grid, grid)
    return np.maximum(drop, 0.0).astype(np.float32)
