"""A lesion's outline found from the image alone, where no dermatologist drew one.

PH2 is the one dataset here with lesion masks, and it is a test set: nothing may be chosen on it. To
choose how the heat map is drawn (ml/serving/heatmap.py), and for a clinic to check it on its own
photos, the lesion is outlined the classic way instead: a dermoscopic lesion is darker than the skin
around it, so Otsu's threshold on the model input's luminance (lightly smoothed) splits the two; the
largest dark region, holes filled, is the lesion. It is a proxy: on some photos it takes a ruler, hair
or a dark corner instead, so it ranks heat maps against each other rather than scoring one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

SMOOTHING = 2.0  # pixels (Gaussian sigma) before the threshold: hair and pores are not the lesion
# An outline that covers less or more than this share of the image is no outline (no dark lesion, or no skin).
AREA_SHARE = (0.02, 0.9)


def dark_lesion_outline(image) -> np.ndarray | None:
    """(S, S) boolean mask of the largest dark region of a preprocessed (S, S, 3) 0..255 image, or None where
    the image has no such region of plausible size."""
    grey = np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = ndimage.gaussian_filter(grey, SMOOTHING)
    if float(grey.max() - grey.min()) < 1.0:
        return None  # one colour: nothing to split
    dark = grey < threshold_otsu(grey)
    labels, n = ndimage.label(dark)
    if n == 0:
        return None
    sizes = ndimage.sum(dark, labels, range(1, n + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return mask if AREA_SHARE[0] <= mask.mean() <= AREA_SHARE[1] else None
