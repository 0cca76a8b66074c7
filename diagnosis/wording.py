"""The words a clinician reads about a result, chosen once: the result page, the lists,
the JSON API (`next_step`) and the referral letter all take them from here.

A result says one thing to do next. The probability is shown as a plain score from
0 to 1 and explained once (in the result page's Details and in the letter), never as
a percentage: this model's threshold is low on purpose (it is set for high
sensitivity), so "16 %" beside "Needs a doctor" reads as a contradiction.
"""

from __future__ import annotations

import math

# Routine follow-up for a low-risk lesion: photographed again at the next skin check.
FOLLOW_UP_MONTHS = 12

NEXT_STEPS = {
    "needs_doctor": "Refer the patient to dermatology.",
    "uncertain": "Have a doctor look at this lesion.",
    "low_risk": f"Routine: photograph it again in {FOLLOW_UP_MONTHS} months, or sooner if it changes.",
    # not assessed: by why (Prediction.status)
    "refused": "Take a new dermoscopic photo of the lesion, or have a doctor look.",
    "retryable": "Retry the assessment; until then, have a doctor look if in doubt.",
}

DISCLAIMER = (
    "Decision support, not a diagnosis. This is the output of a statistical model trained on dermoscopic "
    "images; it can be wrong in both directions. A clinician decides; when in doubt, refer the patient to a doctor."
)

# What each heat map is and is not (ml/serving/heatmap.py; settings.SKINCARE_HEATMAP decides which one a
# new result gets, and the result keeps the name of the one it got).
HEATMAP_NAMES = {"gradcam": "Grad-CAM", "occlusion": "occlusion"}
HEATMAP_CAPTIONS = {
    "gradcam": (
        "Heat map (Grad-CAM): which parts of the photo weighed most in the model's answer (red), "
        "not where the lesion is malignant. It is coarse, and it often lights up the photo's edges or corners "
        "rather than the lesion: use it only to see whether the model looked at the lesion at all."
    ),
    "occlusion": (
        "Heat map (occlusion): the parts of the photo that, covered with skin colour one at a time, lower the "
        "model's score the most (red): what its answer rests on, not where the lesion is malignant. It is "
        "coarse (8 x 8 patches): use it to see whether the answer rests on the lesion or on something else."
    ),
}


def heatmap_name(method: str) -> str:
    """ "Heat map (Grad-CAM)" or "Heat map (occlusion)": what a stored map is called beside it."""
    return f"Heat map ({HEATMAP_NAMES.get(method, method)})"


def heatmap_caption(method: str) -> str:
    return HEATMAP_CAPTIONS.get(method, HEATMAP_CAPTIONS["gradcam"])


def next_step(prediction) -> str:
    """The one thing to do next for this result."""
    if prediction.is_assessed:
        return NEXT_STEPS[prediction.outcome]
    if prediction.status == prediction.Status.REFUSED:
        return NEXT_STEPS["refused"]
    return NEXT_STEPS["retryable"]


def score(prediction) -> str:
    """The probability of malignancy as a plain number (0.165), "" when there is none."""
    p = prediction.probability_malignant
    return "" if p is None else f"{p:.3f}"


def score_explained(prediction) -> str:
    """What the score means, said once (Details, the letter)."""
    if prediction.probability_malignant is None or prediction.threshold is None:
        return ""
    text = (
        f"The score is the model's estimate of the probability of malignancy, from 0 to 1. The model is set to "
        f'miss few melanomas, so its cut-offs are low: from {prediction.threshold:.3f} it says "needs a doctor"'
    )
    if prediction.has_uncertain_band:
        text += f', from {prediction.uncertain_threshold:.3f} "uncertain, have a doctor look"'
    return text + ', below that "low risk". Read the outcome, not the score alone.'


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


_margins: dict[tuple[str, str], float | None] = {}


def boundary_margin(model_version: str) -> float | None:
    """The boundary margin (logits) of the model that made a result, where that model is the one
    installed (read once per model folder and version); None otherwise."""
    from django.conf import settings

    from ml.serving import classifier

    key = (str(settings.SKINCARE_MODEL_DIR), model_version)
    if key not in _margins:
        info = classifier.model_info() or {}
        margin = (info.get("boundary_margin") or {}).get("logit")
        _margins[key] = float(margin) if margin is not None and info.get("model_version") == model_version else None
    return _margins[key]


def could_change_action(prediction) -> bool:
    """Whether a result close to a boundary could get the other answer to "should a doctor look?":
    close to the uncertain threshold where the model has an uncertain band, else to the threshold.
    Between "uncertain" and "needs a doctor" a doctor looks either way, so a result close only to
    that edge gets no note. "Close" is the model's own margin (Prediction.near_boundary: within it
    of some boundary). With the model that made the result installed, the test is that margin
    around the doctor's edge (what docs/using.md measured); otherwise, that edge is the nearer one."""
    if not (prediction.near_boundary and prediction.probability_malignant is not None and prediction.threshold):
        return False
    if not prediction.has_uncertain_band:
        return True
    z = _logit(prediction.probability_malignant)
    to_doctor_edge = abs(z - _logit(prediction.uncertain_threshold))
    margin = boundary_margin(prediction.model_version)
    if margin is not None:
        return to_doctor_edge <= margin
    return to_doctor_edge <= abs(z - _logit(prediction.threshold))
