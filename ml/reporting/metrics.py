"""Metrics, threshold choice and calibration: the one piece of code behind every figure.

`evaluate_model`, `train_model` and the model card all call these functions, so a
number quoted anywhere was computed the same way. Inputs are plain numpy arrays:
`y` (0 benign, 1 malignant) and `p` (probability of malignancy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ml.serving.scores import boundary_distance, logit, near_boundary, outcome_levels, sigmoid  # noqa: F401 (used here and by callers)

SENSITIVITY_TARGET = 0.90  # the saved threshold: at least this share of malignant lesions flagged (validation)
FLAG_TARGET = 0.98  # "needs a doctor" + "uncertain" together flag at least this share (validation)


def roc_auc(y, p) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=float)
    sorted_p = p[order]
    # average ranks over ties
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _resampled(y, n_boot: int, seed: int, statistic) -> list[float]:
    """statistic(indices) over n_boot resamples of the images with replacement (seeded), skipping
    the resamples that hold one class only."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        values.append(statistic(idx))
    return values


def _percentile_interval(values: list[float], alpha: float) -> list[float]:
    """[low, high] percentiles of bootstrap values at 1 - alpha; NaNs where no resample counted."""
    if not values:
        return [float("nan"), float("nan")]
    return [float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))]


def bootstrap_auc_ci(y, p, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> list[float]:
    """Percentile bootstrap 95% interval of the AUC (resampling images)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    return _percentile_interval(_resampled(y, n_boot, seed, lambda idx: roc_auc(y[idx], p[idx])), alpha)


def paired_auc_difference(y, p_a, p_b, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Model B's AUC minus model A's on the same images, with a paired percentile bootstrap interval:
    each resample draws images once and scores both models on them, so what the two share (which
    lesions are hard) cancels, and the interval is about the models, not the sample."""
    y = np.asarray(y).astype(int)
    p_a, p_b = np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)
    if not (len(y) == len(p_a) == len(p_b)):
        raise ValueError("paired_auc_difference needs one score from each model for every image")
    differences = _resampled(y, n_boot, seed, lambda idx: roc_auc(y[idx], p_b[idx]) - roc_auc(y[idx], p_a[idx]))
    auc_a, auc_b = roc_auc(y, p_a), roc_auc(y, p_b)
    return {
        "n": int(len(y)),
        "n_malignant": int(y.sum()),
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": auc_b - auc_a,
        "difference_ci95": _percentile_interval(differences, alpha),
        "bootstrap": len(differences),
        "share_of_resamples_b_below_a": float(np.mean(np.array(differences) < 0)) if differences else float("nan"),
    }


def confusion(y, p, threshold: float) -> dict[str, int]:
    y, pred = np.asarray(y).astype(int), (np.asarray(p) >= threshold).astype(int)
    return {
        "tp": int(((pred == 1) & (y == 1)).sum()),
        "fn": int(((pred == 0) & (y == 1)).sum()),
        "tn": int(((pred == 0) & (y == 0)).sum()),
        "fp": int(((pred == 1) & (y == 0)).sum()),
    }


def _ratio(a: int, b: int) -> float:
    return float(a) / b if b else float("nan")


def threshold_for_sensitivity(y, p, target: float = SENSITIVITY_TARGET) -> float:
    """A threshold whose sensitivity is at least `target`, as high as that allows.

    It lies halfway between the lowest-scored malignant case that must be flagged and the
    next lower score, not on that case's score itself: there, the float16 rounding of the
    LiteRT export (or any rounding) could drop the case below the threshold. The counts at
    the threshold are those of the highest such threshold."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    positives = np.sort(p[y == 1])[::-1]
    if len(positives) == 0:
        raise ValueError("no malignant samples to choose a threshold on")
    k = int(math.ceil(target * len(positives)))  # flag at least k of them
    edge = float(positives[k - 1])
    below = p[p < edge]
    return (edge + float(below.max())) / 2 if len(below) else edge


def specificity_at_sensitivity(y, p, target: float) -> float:
    t = threshold_for_sensitivity(y, p, target)
    c = confusion(y, p, t)
    return _ratio(c["tn"], c["tn"] + c["fp"])


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE with equal-width bins of the predicted probability of malignancy."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def ece_if_calibrated(p, n_bins: int = 10, draws: int = 1000, seed: int = 0) -> dict[str, float]:
    """The ECE a perfectly calibrated model would still show on these images, from chance alone: labels
    drawn from the model's own probabilities, ECE measured as above, `draws` times (mean and 95th
    percentile). On a small set (a few dozen images) it is far from 0, so an ECE there says little."""
    p = np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    onehot = np.eye(n_bins)[bins]  # (n, bins)
    counts = onehot.sum(axis=0)
    y = (np.random.default_rng(seed).random((draws, len(p))) < p).astype(float)
    gap = np.abs(p @ onehot - y @ onehot)  # per draw and bin: |sum p - sum y|, over the bin's n
    ece = gap[:, counts > 0].sum(axis=1) / len(p)
    return {"mean": float(ece.mean()), "p95": float(np.quantile(ece, 0.95))}


def calibration_curve(y, p, n_bins: int = 10):
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    mean_p, frac_pos, counts = [], [], []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            mean_p.append(float(p[mask].mean()))
            frac_pos.append(float(y[mask].mean()))
            counts.append(int(mask.sum()))
    return mean_p, frac_pos, counts


def roc_curve(y, p):
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    thresholds = np.unique(p)[::-1]
    n_pos, n_neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    fpr, tpr = [0.0], [0.0]
    for t in thresholds:
        pred = p >= t
        tpr.append(float((pred & (y == 1)).sum() / n_pos))
        fpr.append(float((pred & (y == 0)).sum() / n_neg))
    return fpr, tpr


def log_loss(y, p) -> float:
    """Binary cross-entropy (mean negative log-likelihood) of probabilities p for labels y."""
    y = np.asarray(y, dtype=float)
    q = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def fit_temperature(y, raw_logits) -> float:
    """Temperature T minimising the validation negative log-likelihood of sigmoid(z / T)."""
    y, z = np.asarray(y, dtype=float), np.asarray(raw_logits, dtype=float)

    def nll(t):
        return log_loss(y, sigmoid(z / t))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = np.linspace(best * 0.95, best * 1.05, 101)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def fit_platt(y, raw_logits, start_offset: float = 0.0) -> tuple[float, float]:
    """(offset, temperature) of sigmoid((z + offset) / T) fitted to (y, z) by maximum likelihood: Platt
    scaling written in the served form, with Platt's smoothed targets ((n+ + 1) / (n+ + 2) for a
    malignant image, 1 / (n- + 2) for a benign one), so that a split the scores separate perfectly still
    has one finite answer. The likelihood is convex in (1 / T, offset / T): any start reaches the same
    optimum; start_offset (and the temperature fitted with it) is where the search begins."""
    y, z = np.asarray(y, dtype=float), np.asarray(raw_logits, dtype=float)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def nll_and_gradient(w):  # w = (1 / T, offset / T)
        q = np.clip(sigmoid(w[0] * z + w[1]), 1e-12, 1 - 1e-12)
        nll = -np.mean(target * np.log(q) + (1 - target) * np.log(1 - q))
        residual = q - target
        return nll, np.array([np.mean(residual * z), np.mean(residual)])

    t0 = fit_temperature(y, z + start_offset)
    found = minimize(nll_and_gradient, [1.0 / t0, start_offset / t0], jac=True, method="BFGS", options={"gtol": 1e-10})
    scale, shift = found.x
    if not scale > 0:  # scores that rank malignant lower than benign: no calibration makes sense of them
        raise ValueError("the validation scores rank benign above malignant: no calibration fits them")
    return float(shift / scale), float(1.0 / scale)


def metrics(y, p, threshold: float, *, n_boot: int = 1000, uncertain_threshold: float | None = None) -> dict[str, Any]:
    """Every figure the project reports, for one labelled set."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    c = confusion(y, p, threshold)
    sensitivity = _ratio(c["tp"], c["tp"] + c["fn"])
    specificity = _ratio(c["tn"], c["tn"] + c["fp"])
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_malignant": int(y.sum()),
        "auc": roc_auc(y, p),
        "auc_ci95": bootstrap_auc_ci(y, p, n_boot=n_boot),
        "threshold": float(threshold),
        "accuracy": _ratio(c["tp"] + c["tn"], len(y)),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "specificity_at_sensitivity_0.95": specificity_at_sensitivity(y, p, 0.95) if y.sum() else float("nan"),
        "ece": expected_calibration_error(y, p),
        "ece_if_calibrated": ece_if_calibrated(p),
        "confusion": c,
    }
    if uncertain_threshold is not None:
        flagged = p >= uncertain_threshold
        out["uncertain_threshold"] = float(uncertain_threshold)
        out["flagged_share_of_malignant"] = _ratio(int((flagged & (y == 1)).sum()), int(y.sum()))
        out["flagged_share_of_benign"] = _ratio(int((flagged & (y == 0)).sum()), int(len(y) - y.sum()))
    return out


BOUNDARY_COVERAGE = 0.90  # the "close to a boundary" note: on at least this share of validation outcome changes


def outcome_moves(p_views, threshold: float, uncertain_threshold: float | None = None) -> np.ndarray:
    """Per image (row of N x V probabilities): whether the outcome differs between its views."""
    level = outcome_levels(p_views, threshold, uncertain_threshold)
    return level.min(axis=1) != level.max(axis=1)


def fit_boundary_margin(
    p_views, threshold: float, uncertain_threshold: float | None = None, coverage: float = BOUNDARY_COVERAGE
) -> dict[str, Any]:
    """The margin, in logits around each outcome boundary, inside which a result is "close to a
    boundary": the smallest that holds at least `coverage` of the images whose outcome changes when
    the photo is turned or flipped (`p_views`, N x V calibrated probabilities of the validation split,
    column 0 the image as it is). Such an image always lies within its largest turn of a boundary, so
    the note goes where another view of the photo can get another outcome. 0 where no outcome changes."""
    p = np.asarray(p_views, dtype=float)
    changes = outcome_moves(p, threshold, uncertain_threshold)
    distance = boundary_distance(p[:, 0], threshold, uncertain_threshold)
    margin = float(np.quantile(distance[changes], coverage, method="higher")) if changes.any() else 0.0
    noted = near_boundary(p[:, 0], threshold, uncertain_threshold, margin)
    return {
        "logit": margin,
        "coverage_target": coverage,
        "views": int(p.shape[1]),
        "validation_outcome_changes": float(changes.mean()),
        "validation_noted": float(noted.mean()),
        "validation_changes_noted": _ratio(int((noted & changes).sum()), int(changes.sum())) if changes.any() else None,
    }


def boundary_notes(
    y, p, threshold: float, uncertain_threshold: float | None, boundary_margin: float, noted=None
) -> dict[str, Any]:
    """Which results the "close to a boundary" note is on (ml.serving.classifier.is_near_boundary, on arrays),
    and above all whether it warns on the malignant lesions the model calls low risk: the costly miss,
    and the case where the note asks for a doctor when in doubt. noted: where the note is, when not
    from p itself (a model that checks close calls decides it at first look, before the check)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    noted = (
        near_boundary(p, threshold, uncertain_threshold, boundary_margin) if noted is None else np.asarray(noted, bool)
    )
    level = outcome_levels(p, threshold, uncertain_threshold)
    low = level == 0
    mal = y == 1
    return {
        "boundary_margin": float(boundary_margin),
        "noted": _ratio(int(noted.sum()), len(p)),
        "noted_by_outcome": {
            name: int((noted & (level == value)).sum())
            for value, name in enumerate(("low_risk", "uncertain", "needs_doctor"))
        },
        "malignant_low_risk": int((low & mal).sum()),
        "malignant_low_risk_noted": int((low & mal & noted).sum()),
        "benign_low_risk": int((low & ~mal).sum()),
        "benign_low_risk_noted": int((low & ~mal & noted).sum()),
    }


def orientation_consistency(
    y,
    p_views,
    threshold: float,
    uncertain_threshold: float | None = None,
    views: list[str] | tuple[str, ...] = (),
    boundary_margin: float | None = None,
    noted=None,
) -> dict[str, Any]:
    """How much the outcome depends on how the photo was turned: the same images scored in several
    orientations (`p_views`, N x V calibrated probabilities, column 0 the image as it is; ml/serving/tta.py's
    flips and quarter turns). A lesion has no "up", so a clinician expects one answer for it.

    The outcome is the three-way one the clinician sees (low risk, uncertain, needs a doctor);
    "flagged" means a doctor looks (uncertain or needs a doctor, or needs a doctor alone where the
    model has no uncertain band)."""
    y, p = np.asarray(y).astype(int), np.asarray(p_views, dtype=float)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"p_views must be (n images, n views), got {p.shape} for {len(y)} labels")
    flagged = p >= (threshold if uncertain_threshold is None else uncertain_threshold)
    differs = outcome_moves(p, threshold, uncertain_threshold)
    flag_differs = flagged.any(axis=1) & ~flagged.all(axis=1)
    z = logit(np.clip(p, 1e-7, 1 - 1e-7))
    spread = z.max(axis=1) - z.min(axis=1)
    mal = y == 1
    result = {
        "views": list(views) or [f"view {i}" for i in range(p.shape[1])],
        "outcome_changes": float(differs.mean()),
        "flag_changes": float(flag_differs.mean()),
        "malignant_flag_changes": _ratio(int(flag_differs[mal].sum()), int(mal.sum())),
        "malignant_not_flagged_as_is": _ratio(int((~flagged[mal, 0]).sum()), int(mal.sum())),
        "malignant_not_flagged_in_some_view": _ratio(int((~flagged[mal]).any(axis=1).sum()), int(mal.sum())),
        "logit_spread_median": float(np.median(spread)),
        "logit_spread_p90": float(np.quantile(spread, 0.9)),
        "auc_by_view": [roc_auc(y, p[:, j]) for j in range(p.shape[1])],
        "sensitivity_by_view": [_ratio(int((p[mal, j] >= threshold).sum()), int(mal.sum())) for j in range(p.shape[1])],
        "specificity_by_view": [
            _ratio(int((p[~mal, j] < threshold).sum()), int((~mal).sum())) for j in range(p.shape[1])
        ],
    }
    if boundary_margin is not None:  # the result page's "close to a boundary" note, as fitted on validation
        noted = (
            near_boundary(p[:, 0], threshold, uncertain_threshold, boundary_margin)
            if noted is None
            else np.asarray(noted, dtype=bool)
        )
        result.update(
            {
                "boundary_margin": float(boundary_margin),
                "noted": float(noted.mean()),
                # None where nothing changed: there is nothing for the note to hold
                "outcome_changes_noted": _ratio(int((noted & differs).sum()), int(differs.sum()))
                if differs.any()
                else None,
                "noted_outcome_changes": _ratio(int((noted & differs).sum()), int(noted.sum()))
                if noted.any()
                else None,
                "malignant_flag_changes_noted": (
                    _ratio(int((noted & flag_differs)[mal].sum()), int(flag_differs[mal].sum()))
                    if flag_differs[mal].any()
                    else None
                ),
            }
        )
    return result


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per named set."""
    cols = [
        "n",
        "n_malignant",
        "auc",
        "auc_ci95",
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "specificity_at_sensitivity_0.95",
        "ece",
    ]
    heads = ["set", "n", "n_mal", "AUC", "AUC 95% CI", "acc", "bal_acc", "sens", "spec", "spec@sens.95", "ECE"]

    def cell(v):
        if isinstance(v, list):
            return f"{v[0]:.3f}-{v[1]:.3f}"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    table = [heads] + [[name] + [cell(m.get(c, "")) for c in cols] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in table) for i in range(len(heads))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table)
