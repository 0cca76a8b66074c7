"""The last step of every model artifact: calibration and outcome thresholds fitted on the
validation scores of the model exactly as serving runs it, then the figures and plots.

train_model, import_model and calibrate_model all end here. The scores come from
:class:`ml.serving.classifier.LoadedModel` on the saved folder, so they are the served runtime's
(the float16 LiteRT export where there is one, with the test-time views the metadata names),
not the Keras model's that training holds in memory: the two differ by float16 rounding,
and a threshold chosen on one can break its promise on the other (an earlier model's
uncertain band flagged 0.976 of validation melanomas as served instead of 0.98).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ml.artifact import METRICS_FILENAME
from ml.reporting import metrics as evaluation
from ml.reporting import plots
from ml.serving import tta
from ml.serving.classifier import LoadedModel, raw_orientations, served_orientations


def fit_calibration(y_val: np.ndarray, raw_val: np.ndarray, train_prior: float) -> dict[str, float]:
    """Calibration and the outcome thresholds, from the validation split's raw scores only.

    Platt scaling in the served form sigmoid((logit(p_raw) + logit_offset) / temperature): both
    fitted on the validation split by maximum likelihood, starting from the offset that moves the
    balanced training prior to the validation split's prevalence (`prior_offset`, recorded too).
    Fitting the offset as well matters where the validation split pools sources: with the prior's
    offset fixed, a four-source model's ECE was 0.055 on the split it was fitted on, with both
    fitted 0.019 (5-fold within validation, docs/experiments.md). The two thresholds are chosen on
    the calibrated probabilities: "needs a doctor" for sensitivity >= SENSITIVITY_TARGET, and the
    "uncertain" band below it so that both outcomes together flag >= FLAG_TARGET."""
    val_prior = float(np.mean(y_val))
    prior_offset = math.log(val_prior / (1 - val_prior)) - math.log(train_prior / (1 - train_prior))
    logit_offset, temperature = evaluation.fit_platt(y_val, evaluation.logit(raw_val), prior_offset)
    p_val = evaluation.sigmoid((evaluation.logit(raw_val) + logit_offset) / temperature)
    threshold = evaluation.threshold_for_sensitivity(y_val, p_val, evaluation.SENSITIVITY_TARGET)
    uncertain_threshold = min(evaluation.threshold_for_sensitivity(y_val, p_val, evaluation.FLAG_TARGET), threshold)
    return {
        "logit_offset": logit_offset,
        "temperature": temperature,
        "prior_offset": prior_offset,
        "threshold": threshold,
        "uncertain_threshold": uncertain_threshold,
    }


def training_prior(meta: dict[str, Any]) -> float:
    """The malignant share training saw, which calibration undoes, from metadata's data.training_views:
    the share of phase 2's batches where train_model kept them (phase2_malignant_share), one half where every
    batch was half malignant (balanced_batches, ml.training.gpu), else the counted views."""
    views = (meta.get("data") or {}).get("training_views") or {}
    if views.get("prior") is not None:  # recorded by train_model and import_model since the single trainer
        return float(views["prior"])
    if views.get("phase2_malignant_share") is not None:
        return float(views["phase2_malignant_share"])
    if views.get("balanced_batches"):
        return 0.5
    n, n_malignant = views.get("n"), views.get("n_malignant", 0)
    if not n or not 0 < n_malignant < n:
        raise ValueError("no training class counts (data.training_views) to undo the training prior")
    return n_malignant / n


def calibrate_and_report(
    model_dir,
    y_val: np.ndarray,
    val_images,
    train_prior: float,
    *,
    fitted_by: str,
    y_test: np.ndarray | None = None,
    test_images=None,
    results: dict[str, Any] | None = None,
    history: dict[str, list[float]] | None = None,
    phases: list[int] | None = None,
    log: Callable[[str], None] = print,
    close_calls: bool = True,
    val_sources=None,
    test_sources=None,
) -> dict[str, Any]:
    """Score the validation (and test) split with the saved model as served, fit calibration and
    thresholds on validation alone, record them in metadata.json, and write metrics.json and the
    plots from those same served scores. The test split is scored, never used to choose.

    fitted_by: the command, as the model card should quote it. close_calls: a model that scores the
    image as it is also gets a close-call check (ml/serving/tta.py: results close to a boundary are scored
    again in all eight views), its calibration fitted on the same validation images."""

    model_dir = Path(model_dir)
    meta_path = model_dir / "metadata.json"
    # One load scores both splits: raw scores depend on the weights and views, not on the calibration
    # written in between.
    loaded = LoadedModel(model_dir)
    runtime = loaded.runtime.name
    # The validation images in the eight orientations, for the "close to a boundary" margin; column 0
    # is the image as it is, as serving scores it. A model that averages all eight views answers the
    # same in each (they are the same eight views, reordered), so it is scored once.
    invariant = set(loaded.views) == set(tta.ALL_VIEWS)
    raw_views = raw_orientations(loaded, val_images, orientations=tta.IDENTITY if invariant else tta.ALL_VIEWS)
    raw_val = raw_views[:, 0]
    fitted = fit_calibration(y_val, raw_val, train_prior)
    meta = json.loads(meta_path.read_text())
    meta.update(fitted)
    p_views = evaluation.sigmoid((evaluation.logit(raw_views) + fitted["logit_offset"]) / fitted["temperature"])
    margin = evaluation.fit_boundary_margin(p_views, fitted["threshold"], fitted["uncertain_threshold"])
    margin["rule"] = (
        "exact: the model averages all eight views, so turning the photo does not change its answer"
        if invariant
        else f"the smallest margin around the outcome boundaries that holds >= {evaluation.BOUNDARY_COVERAGE:.2f} of "
        "the validation images whose outcome changes when the photo is turned or flipped (8 views)"
    )
    meta["boundary_margin"] = margin
    meta.pop(tta.CLOSE_CALL_KEY, None)
    if close_calls and not invariant and margin["logit"] > 0:
        # The average of the eight views, calibrated like the model's own score: the same prior
        # correction, a temperature of its own (an average of views spreads less than one view).
        averaged = evaluation.logit(raw_views).mean(axis=1) + fitted["logit_offset"]
        meta[tta.CLOSE_CALL_KEY] = {
            "views": list(tta.ALL_VIEWS),
            "temperature": evaluation.fit_temperature(y_val, averaged),
            "logit_offset": fitted["logit_offset"],
            "rule": "a result whose first look is within the boundary margin is scored again in all eight views; "
            "their average, calibrated on the validation split, is the answer, at the model's thresholds",
        }
    meta["calibration_fit"] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": fitted_by,
        "runtime": runtime,
        "views": list(meta.get("tta_views") or ["id"]),
        "validation_n": int(len(y_val)),
        "validation_auc": evaluation.roc_auc(y_val, raw_val),
    }
    meta_path.write_text(json.dumps(meta, indent=2))

    threshold, uncertain = fitted["threshold"], fitted["uncertain_threshold"]
    if tta.CLOSE_CALL_KEY in meta:  # what the check does on the split it was fitted on, applied
        loaded.use_calibration(meta, check_close_calls=True)  # the same weights, now calibrated
        served_val, near_val = served_orientations(loaded, val_images, orientations=tta.IDENTITY)
        p_checked = served_val[:, 0]
        check = meta[tta.CLOSE_CALL_KEY]
        check.update(
            {
                "validation_checked": float(near_val.mean()),
                "validation_sensitivity": float(np.mean(p_checked[y_val == 1] >= threshold)),
                "validation_flagged_share_of_malignant": float(np.mean(p_checked[y_val == 1] >= uncertain)),
            }
        )
        if (
            check["validation_sensitivity"] < evaluation.SENSITIVITY_TARGET
            or check["validation_flagged_share_of_malignant"] < evaluation.FLAG_TARGET
        ):
            # The thresholds were chosen for the first look; a check that breaks their promise is not kept.
            log(
                f"no close-call check: with it the validation split would lose its sensitivity or flagged share "
                f"({check['validation_sensitivity']:.3f}, {check['validation_flagged_share_of_malignant']:.3f})"
            )
            del meta[tta.CLOSE_CALL_KEY]
        meta_path.write_text(json.dumps(meta, indent=2))
    # metrics.json and the plots: as serving scores under the current settings (the check is
    # applied where SKINCARE_CLOSE_CALL_CHECK is on)
    loaded.use_calibration(meta)
    p_val = (
        p_checked if loaded.close_call else np.array([loaded.calibrate(raw) for raw in raw_val])
    )  # the first look alone: its scores above
    results = dict(results or {})
    results.update(
        {
            "model_version": meta.get("model_version"),
            "scored_with": {
                "runtime": runtime,
                "views": meta["calibration_fit"]["views"],
                "close_call_check": bool(loaded.close_call),
            },
            "validation": evaluation.metrics(y_val, p_val, threshold, uncertain_threshold=uncertain),
            "validation_uncalibrated_ece": evaluation.expected_calibration_error(y_val, raw_val),
        }
    )
    if val_sources is not None and len(set(val_sources)) > 1:
        results["validation_by_source"] = _by_source(y_val, p_val, val_sources, threshold, uncertain)
    plots.plot_evaluation(y_val, p_val, threshold, model_dir, prefix="validation_", title="(validation)")
    if y_test is not None and len(y_test) and 0 < int(np.sum(y_test)) < len(y_test):
        p_test = served_orientations(loaded, test_images, orientations=tta.IDENTITY)[0][:, 0]
        results["test"] = evaluation.metrics(y_test, p_test, threshold, uncertain_threshold=uncertain)
        if test_sources is not None and len(set(test_sources)) > 1:
            results["test_by_source"] = _by_source(y_test, p_test, test_sources, threshold, uncertain)
        plots.plot_evaluation(y_test, p_test, threshold, model_dir, prefix="test_", title="(test)")
    if history:
        results["history"] = history
        plots.plot_history(history, model_dir, phases=phases)
    (model_dir / METRICS_FILENAME).write_text(json.dumps(results, indent=2))
    log(
        f"calibrated on the validation scores of the {runtime} runtime: temperature {fitted['temperature']:.3f}, "
        f"threshold {threshold:.4f}, uncertain from {uncertain:.4f}; close to a boundary within "
        f"{margin['logit']:.3f} logits (the outcome changes with the view for {margin['validation_outcome_changes']:.3f} "
        f"of the validation images, the note is on {margin['validation_noted']:.3f})"
        + (
            f"; its close-call check (eight views, applied with SKINCARE_CLOSE_CALL_CHECK"
            f"{' on, as now' if loaded.close_call else ', off now'}) on validation: sensitivity "
            f"{meta[tta.CLOSE_CALL_KEY]['validation_sensitivity']:.3f}, flagged "
            f"{meta[tta.CLOSE_CALL_KEY]['validation_flagged_share_of_malignant']:.3f} of the malignant"
            if tta.CLOSE_CALL_KEY in meta
            else ""
        )
    )
    log(evaluation.format_table({k: results[k] for k in ("validation", "test") if k in results}))
    return results


def _by_source(y, p, sources, threshold: float, uncertain: float | None) -> dict[str, Any]:
    """The split's figures for each source apart (metrics where both classes are there, else counts)."""
    y, p, sources = np.asarray(y), np.asarray(p), np.asarray(sources)
    out = {}
    for source in sorted(set(sources.tolist())):
        mask = sources == source
        if 0 < int(y[mask].sum()) < int(mask.sum()):
            out[source] = evaluation.metrics(y[mask], p[mask], threshold, uncertain_threshold=uncertain)
        else:
            out[source] = {"n": int(mask.sum()), "n_malignant": int(y[mask].sum())}
    return out
