"""The arithmetic serving does on scores: logits, and where an outcome boundary is near.

ml.reporting.metrics uses the same functions for its figures, so the served note and the
measured one are computed alike. NumPy only.
"""

from __future__ import annotations

import numpy as np


def logit(p):
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def boundary_distance(p, threshold: float, uncertain_threshold: float | None = None):
    """How far each calibrated probability is from the nearest outcome boundary (the threshold, and
    the uncertain threshold where the band is not empty), in logits: a probability's distance from a
    boundary in the units in which turning the photo moves it."""
    z = logit(np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7))
    edges = [threshold] + (
        [uncertain_threshold] if uncertain_threshold is not None and uncertain_threshold < threshold else []
    )
    return np.min([np.abs(z - logit(np.clip(edge, 1e-7, 1 - 1e-7))) for edge in edges], axis=0)


def outcome_levels(p, threshold: float, uncertain_threshold: float | None = None) -> np.ndarray:
    """0 low risk, 1 uncertain, 2 needs a doctor (ml.serving.classifier.outcome_for, on arrays)."""
    p = np.asarray(p, dtype=float)
    flag_at = threshold if uncertain_threshold is None else uncertain_threshold
    return (p >= threshold).astype(int) + (p >= flag_at)


def near_boundary(p, threshold: float, uncertain_threshold: float | None, boundary_margin: float) -> np.ndarray:
    """Where the "close to a boundary" note goes: within the margin (logits) of an outcome boundary;
    nowhere with a margin of 0 (a model whose answer does not move with the view)."""
    p = np.asarray(p, dtype=float)
    if boundary_margin <= 0:
        return np.zeros(p.shape, dtype=bool)
    return boundary_distance(p, threshold, uncertain_threshold) <= boundary_margin
