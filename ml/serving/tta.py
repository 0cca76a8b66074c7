"""Test-time augmentation: the model scores an image in several orientations and the scores are averaged.

A dermoscopic image has no "up": the lesion is the same lesion flipped or turned by 90
degrees, and the model was trained on such views. The eight symmetries of the square
(the dihedral group: optional transpose, then optional left-right and up-down flips) are
exact on any square input, so no pixel is interpolated.

Averaging is done on the score the Grad-CAM map explains, log p(malignant) - log p(benign):
the averaged score is the model's logit for the averaged views, and because Grad-CAM is
linear in that score, the map for the averaged score is the average of each view's map,
turned back to the image's own orientation, before the ReLU.

Which views a model uses is saved in its metadata ("tta_views"), like its threshold:
calibration and threshold are fitted on the scores of exactly those views. A model
without the key uses the image as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.serving.scores import sigmoid

IDENTITY = ("id",)
ALL_VIEWS = ("id", "h", "v", "hv", "t", "th", "tv", "thv")


def views_of(metadata: dict) -> tuple[str, ...]:
    views = tuple(metadata.get("tta_views") or IDENTITY)
    unknown = [v for v in views if v not in ALL_VIEWS]
    if unknown:
        raise ValueError(f"metadata.json: unknown test-time views {unknown} (known: {', '.join(ALL_VIEWS)})")
    if views[0] != "id":  # the image gate reads the first view's features: the image as it is
        raise ValueError(f"metadata.json: the test-time views must start with 'id', not {views[0]!r}")
    return views


def transform(x: np.ndarray, view: str) -> np.ndarray:
    """One view of a batch of images (N, H, W, C) or of maps (N, H, W): transpose, then flips."""
    if "t" in view:
        x = np.swapaxes(x, 1, 2)
    if "h" in view:
        x = x[:, :, ::-1]
    if "v" in view:
        x = x[:, ::-1]
    return x


def untransform(maps: np.ndarray, view: str) -> np.ndarray:
    """Maps (N, H, W) of a view back in the image's own orientation: the steps of transform() undone in reverse."""
    if "v" in view:
        maps = maps[:, ::-1]
    if "h" in view:
        maps = maps[:, :, ::-1]
    if "t" in view:
        maps = np.swapaxes(maps, 1, 2)
    return maps


def expand(batch: np.ndarray, views: Sequence[str]) -> np.ndarray:
    """(N, H, W, C) -> (N * V, H, W, C), view-major: rows [k*N, (k+1)*N) are view k."""
    return np.ascontiguousarray(np.concatenate([transform(batch, v) for v in views]))


def combine(scores: np.ndarray, cams: np.ndarray | None, views: Sequence[str], n: int):
    """Per image: the mean score over its views and the mean of their maps (pre-ReLU, turned back).

    scores: (N * V,) and cams: (N * V, h, w), view-major as from expand(). Returns
    (the raw malignant probability sigmoid(mean score) (N,), the ReLU'd map (N, h, w) or None)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(views), n)
    probability = sigmoid(scores.mean(axis=0))
    if cams is None:
        return probability, None
    cams = np.asarray(cams, dtype=np.float32)
    per_view = [untransform(cams[k * n : (k + 1) * n], v) for k, v in enumerate(views)]
    return probability, np.maximum(np.mean(per_view, axis=0), 0.0)


CLOSE_CALL_KEY = "close_call_check"


def close_call_check(metadata: dict) -> dict | None:
    """The model's check of close calls (metadata "close_call_check"), or None where it has none.

    A model that scores the image as it is can look again, in all eight views, where its first look
    lands within its boundary margin of an outcome boundary (ml.reporting.metrics.near_boundary): there
    the same photo turned can get another outcome, and the average of the eight views cannot.
    The averaged score has its own temperature and offset, fitted on the validation split like
    the model's own; the outcome thresholds are the model's, since both scores are calibrated
    probabilities. Only a model whose own views are the image as it is can have one."""
    check = metadata.get(CLOSE_CALL_KEY)
    if not check:
        return None
    views = tuple(check.get("views") or ())
    if set(views) != set(ALL_VIEWS) or len(views) != len(ALL_VIEWS) or views[0] != "id":
        raise ValueError(
            f"metadata.json: {CLOSE_CALL_KEY} must average all eight views, starting with 'id' (got {list(views)})"
        )
    if tuple(metadata.get("tta_views") or IDENTITY) != IDENTITY:
        raise ValueError(
            f"metadata.json: {CLOSE_CALL_KEY} is for a model that scores the image as it is, "
            f"not one that averages the views {metadata.get('tta_views')}"
        )
    try:
        temperature, offset = float(check["temperature"]), float(check.get("logit_offset", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"metadata.json: {CLOSE_CALL_KEY} needs a numeric temperature ({exc})") from exc
    if not temperature > 0:
        raise ValueError(f"metadata.json: {CLOSE_CALL_KEY} temperature must be positive, not {temperature}")
    return {"views": views, "temperature": temperature, "logit_offset": offset}
