"""The image gate: refuse what the model was never trained on, before it says anything.

The model knows dermoscopic images of skin lesions and nothing else; a photo of a
cat still gets a "probability of malignancy" unless something stops it. Two kinds
of check, with limits learnt from the training images and saved with the model
(gate.npz and metadata.json):

* image quality, from the model input: too dark, too bright, nearly one
  colour, no skin colour at all (greyscale), too blurred to judge (variance of
  the Laplacian), grainy like pixel noise (that variance against the contrast's);
* familiarity: the distance, in the statistics of the feature map where the
  network's lower part ends (NetworkSpec.split_block: block 8's input, 80 channels, for
  models split before 2026-12-06, their per-channel mean and spread; block 14's output,
  192 channels, since, its per-channel mean), to the five nearest training images.
  The reference holds each training image twice: as it is, and
  through the training augmentation (other dermoscopes' colour, exposure, zoom and
  vignetting) followed by sharpening or softening by a random amount (other
  dermoscopes' optics: PH2's images are sharper than HAM10000's, and 12 of the 200
  fell just beyond the limit when the reference had no such change), so a
  lesion from another clinic stays familiar while a cat, a cup of coffee or random
  noise does not. The blocks are fine-tuned with the rest, and the gate is fitted
  on the trained model, so reference and limits match the features it is given.
  Why block 14: fitted on four sources, block 8's statistics put cats, fruit and rooms
  as near the lesions as another clinic's lesions are (docs/experiments.md), while
  block 14 still tells them apart. The last map (block 15 and the 1280-channel top)
  does not: it was trained to tell benign from malignant and no longer tells a lesion
  from a cat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifact import GATE_FILENAME

NEIGHBOURS = 5
REFERENCE_IMAGES = 1200  # training images in the reference (each also augmented once), shared out among the sources
# Limits are set this far beyond what the training images themselves reach.
QUALITY_QUANTILE = 0.002
DISTANCE_QUANTILE = 0.999
DISTANCE_MARGIN = 1.1  # the least margin; a gate fitted on several sources may need more (ml.training.gate_fitting)
# What the familiarity distance is measured on, of the lower part's map: its per-channel mean and spread
# ("mean_std", the models fitted before 2026-12-06), or its per-channel mean alone ("mean"). The runtimes always
# give both (feature_statistics); the gate keeps what it was fitted on.
STATISTICS = ("mean_std", "mean")
# Grain (Laplacian variance / contrast squared) is limited at this many times the reference's augmented views'
# 99.8th percentile (about 3.9): so that validation images sharpened by the reference's largest amount, the
# sharpest dermoscope it stands for (up to 5.8), pass, while the junk's pixel noise (about 12) does not.
GRAIN_MARGIN = 2.0


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str  # empty when accepted; otherwise words for the clinician
    measures: dict[str, float]


def quality_measures(rgb: np.ndarray) -> dict[str, float]:
    """Brightness, contrast, clipped share, colourfulness, sharpness and grain of a (H, W, 3) 0..255 image."""
    rgb = np.asarray(rgb, dtype=np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())  # Hasler & Suesstrunk
    lap = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    detail = float(lap.var())
    return {
        "brightness": float(grey.mean()),
        "contrast": float(grey.std()),
        "dark_share": float((grey < 12).mean()),
        "bright_share": float((grey > 243).mean()),
        "sharpness": detail,
        "colourfulness": float(colourfulness),
        # the fine detail's share of the contrast: about 12 for the junk's pixel noise, at most 6 for a sharpened lesion
        "grain": detail / max(float(grey.var()), 1.0),
    }


def feature_statistics(feature_maps) -> np.ndarray:
    """Per-channel mean and standard deviation of (N, H, W, C) feature maps -> (N, 2C)."""
    maps = np.asarray(feature_maps, dtype=np.float32)
    return np.concatenate([maps.mean(axis=(1, 2)), maps.std(axis=(1, 2))], axis=1)


def chosen_statistics(features, statistics: str) -> np.ndarray:
    """The columns of feature_statistics' (N, 2C) rows that `statistics` names."""
    if statistics not in STATISTICS:
        raise ValueError(f"unknown gate statistics {statistics!r}: choose one of {', '.join(STATISTICS)}")
    features = np.atleast_2d(features)
    return features[:, : features.shape[1] // 2] if statistics == "mean" else features


class Gate:
    def __init__(self, limits: dict[str, float], centre=None, scale=None, reference=None, statistics: str = "mean_std"):
        self.limits = dict(limits)
        self.centre, self.scale, self.reference = centre, scale, reference
        self.statistics = statistics
        if reference is not None:  # once, not per image: the reference in float32 and its squared norms
            self._reference32 = np.asarray(reference, dtype=np.float32)
            self._reference_norms = (self._reference32**2).sum(axis=1)

    # ------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        reference_features: np.ndarray,
        reference_quality: list[dict[str, float]],
        val_features: np.ndarray,
        malignant_features: np.ndarray | None = None,
        malignant_quality: list[dict[str, float]] | None = None,
        statistics: str = "mean_std",
        augmented_quality: list[dict[str, float]] | None = None,
        margin: float = DISTANCE_MARGIN,
    ) -> Gate:
        """Limits from the reference (training images) and the validation images. Where the malignant
        validation images are given (their features and quality measures), every limit is also widened, by
        the same margins, until none of them is refused: a refused melanoma is a missed one, so the gate
        errs towards letting a lesion through. `margin`: how far beyond the validation images' distances
        (their 99.9th percentile, and the farthest malignant one) the distance limit lies."""
        q = {k: np.array([m[k] for m in reference_quality]) for k in reference_quality[0]}

        def quantile(k, at):
            return float(np.quantile(q[k], at))

        limits = {
            "min_brightness": min(quantile("brightness", QUALITY_QUANTILE) * 0.6, 40.0),
            "max_brightness": max((quantile("brightness", 1 - QUALITY_QUANTILE) + 255) / 2, 215.0),
            "min_contrast": min(quantile("contrast", QUALITY_QUANTILE) * 0.5, 8.0),
            "max_dark_share": 0.85,
            "max_bright_share": 0.6,
            "min_sharpness": quantile("sharpness", QUALITY_QUANTILE) * 0.35,
            "min_colourfulness": quantile("colourfulness", QUALITY_QUANTILE) * 0.5,
        }
        if augmented_quality:  # the reference's augmented views: other dermoscopes' optics, the sharpest included
            grain = np.array([m["grain"] for m in augmented_quality])
            limits["max_grain"] = float(np.quantile(grain, 1 - QUALITY_QUANTILE)) * GRAIN_MARGIN
        if malignant_quality:
            m = {k: np.array([v[k] for v in malignant_quality]) for k in malignant_quality[0]}
            if "max_grain" in limits:
                limits["max_grain"] = max(limits["max_grain"], float(m["grain"].max()) * GRAIN_MARGIN)
            limits["min_brightness"] = min(limits["min_brightness"], float(m["brightness"].min()) * 0.6)
            limits["max_brightness"] = max(limits["max_brightness"], (float(m["brightness"].max()) + 255) / 2)
            limits["min_contrast"] = min(limits["min_contrast"], float(m["contrast"].min()) * 0.5)
            limits["max_dark_share"] = max(limits["max_dark_share"], float(m["dark_share"].max()))
            limits["max_bright_share"] = max(limits["max_bright_share"], float(m["bright_share"].max()))
            limits["min_sharpness"] = min(limits["min_sharpness"], float(m["sharpness"].min()) * 0.35)
            limits["min_colourfulness"] = min(limits["min_colourfulness"], float(m["colourfulness"].min()) * 0.5)
        reference_features = chosen_statistics(reference_features, statistics)
        centre = reference_features.mean(axis=0)
        scale = reference_features.std(axis=0) + 1e-6
        gate = cls(
            limits,
            centre.astype(np.float32),
            scale.astype(np.float32),
            ((reference_features - centre) / scale).astype(np.float16),
            statistics,
        )
        distances = gate.distance(val_features)
        gate.limits["max_distance"] = float(np.quantile(distances, DISTANCE_QUANTILE) * margin)
        if malignant_features is not None and len(malignant_features):
            gate.limits["max_distance"] = max(
                gate.limits["max_distance"], float(gate.distance(malignant_features).max()) * margin
            )
        gate.limits["validation_distance_p50"] = float(np.median(distances))
        return gate

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mean distance to the nearest training images, in standardised feature statistics (rows of
        feature_statistics; the gate takes the columns it was fitted on)."""
        z = ((chosen_statistics(features, self.statistics) - self.centre) / self.scale).astype(np.float32)
        d2 = (z**2).sum(1)[:, None] - 2 * z @ self._reference32.T + self._reference_norms[None, :]
        nearest = np.partition(np.maximum(d2, 0), NEIGHBOURS - 1, axis=1)[:, :NEIGHBOURS]
        return np.sqrt(nearest).mean(axis=1)

    # ------------------------------------------------------------ deciding
    def decide(self, rgb: np.ndarray, features: np.ndarray | None) -> GateDecision:
        """`features`: feature_statistics of this image's lower-backbone map (or None)."""
        m = quality_measures(rgb)
        L = self.limits
        reason = ""
        if m["contrast"] < L["min_contrast"]:
            reason = "The image is nearly one colour: there is no lesion to assess."
        elif m["brightness"] < L["min_brightness"] or m["dark_share"] > L["max_dark_share"]:
            reason = "The image is far too dark to assess. Retake it with the dermoscope's light on."
        elif m["brightness"] > L["max_brightness"] or m["bright_share"] > L["max_bright_share"]:
            reason = "The image is overexposed (burnt out) and cannot be assessed. Retake it with less light."
        elif m["grain"] > L.get("max_grain", np.inf):
            reason = "The image is grainy like pixel noise, unlike any dermoscopic photo. Retake it."
        elif m["sharpness"] < L["min_sharpness"]:
            reason = "The image is too blurred to assess. Retake it in focus."
        elif m["colourfulness"] < L.get("min_colourfulness", 0.0):
            reason = "The image has no skin colour (greyscale?): it cannot be a dermoscopic photo of a lesion."
        if features is not None and self.reference is not None and "max_distance" in L:
            d = float(self.distance(features)[0])
            m["feature_distance"] = d
            if not reason and d > L["max_distance"]:
                reason = (
                    "This does not look like a dermoscopic image of a skin lesion, the only kind of image "
                    "the model was trained on. Have a doctor look at the lesion."
                )
        return GateDecision(not reason, reason, m)

    # ------------------------------------------------------------ storage
    def save(self, directory: Path) -> dict[str, float]:
        np.savez_compressed(
            Path(directory) / GATE_FILENAME,
            centre=self.centre,
            scale=self.scale,
            reference=self.reference,
            statistics=np.array(self.statistics),
        )
        return self.limits

    @classmethod
    def load(cls, directory: Path, metadata: dict[str, Any]) -> Gate | None:
        limits = metadata.get("gate")
        if not limits:
            return None
        path = Path(directory) / GATE_FILENAME
        if path.is_file():
            with np.load(path) as data:
                statistics = str(data["statistics"]) if "statistics" in data.files else "mean_std"
                return cls(limits, data["centre"], data["scale"], data["reference"], statistics)
        return cls(limits)
