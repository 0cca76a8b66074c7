"""The metric code behind every figure in the model card."""

import numpy as np
import pytest

from ml.reporting import metrics as evaluation


def test_threshold_flags_the_target_share_and_survives_rounding():
    rng = np.random.default_rng(1)
    y = np.array([1] * 50 + [0] * 450)
    p = np.concatenate([rng.uniform(0.2, 1.0, 50), rng.uniform(0.0, 0.6, 450)])
    t = evaluation.threshold_for_sensitivity(y, p, 0.90)
    flagged = (p[y == 1] >= t).sum()
    assert flagged == 45  # ceil(0.9 * 50): at least the target, and no more than it needs
    # It lies strictly between two scores, halfway, so a little rounding (the LiteRT export's
    # float16) cannot move a case across it: the lowest flagged case is as far above as the
    # highest unflagged score is below.
    above, below = p[p >= t].min(), p[p < t].max()
    assert above - t == pytest.approx(t - below) and above > t > below


def test_threshold_counts_equal_those_at_the_edge_case():
    y = np.array([1, 1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.5, 0.3, 0.6, 0.4, 0.1])
    t = evaluation.threshold_for_sensitivity(y, p, 0.75)  # flag 3 of 4: the edge case scores 0.5
    assert t == pytest.approx(0.45)  # halfway to the next lower score, 0.4
    assert evaluation.confusion(y, p, t) == evaluation.confusion(y, p, 0.5)


def test_threshold_needs_malignant_cases():
    with pytest.raises(ValueError):
        evaluation.threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_auc_and_ece_on_known_cases():
    assert evaluation.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert evaluation.roc_auc([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9]) == 0.75  # 3 of 4 pairs in order
    # Perfectly calibrated in each bin: ECE 0. Everything at 0.9 while 10% are malignant: ECE 0.8.
    y = np.array([1] * 9 + [0] + [1] + [0] * 9)
    assert evaluation.expected_calibration_error(y, [0.9] * 10 + [0.1] * 10) == pytest.approx(0.0)
    assert evaluation.expected_calibration_error([1] + [0] * 9, [0.9] * 10) == pytest.approx(0.8)


def test_paired_auc_difference_is_about_the_models_not_the_sample():
    rng = np.random.default_rng(3)
    y = np.array([1] * 40 + [0] * 160)
    a = y * 0.8 + rng.normal(0, 0.5, len(y))
    same = evaluation.paired_auc_difference(y, a, a.copy(), n_boot=200)
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]
    assert same["share_of_resamples_b_below_a"] == 0 and same["n"] == 200 and same["n_malignant"] == 40

    # B a little better than A on the same images: the paired interval is far narrower than either
    # model's own interval, which the shared hard cases widen
    b = a + y * 0.15 + rng.normal(0, 0.05, len(y))
    paired = evaluation.paired_auc_difference(y, a, b, n_boot=500)
    assert paired["difference"] == pytest.approx(evaluation.roc_auc(y, b) - evaluation.roc_auc(y, a))
    assert paired["difference"] > 0 and paired["difference_ci95"][0] > 0
    own = evaluation.bootstrap_auc_ci(y, b, n_boot=500)
    assert paired["difference_ci95"][1] - paired["difference_ci95"][0] < 0.5 * (own[1] - own[0])

    # A better than B: the sign follows, and the resamples say so
    worse = evaluation.paired_auc_difference(y, b, a, n_boot=500)
    assert worse["difference"] == pytest.approx(-paired["difference"]) and worse["share_of_resamples_b_below_a"] > 0.95

    with pytest.raises(ValueError, match="one score from each model"):
        evaluation.paired_auc_difference(y, a, b[:-1])


def test_orientation_consistency_counts_outcomes_that_move_with_the_view():
    # threshold 0.5, uncertain band from 0.2: outcome levels low < 0.2 <= uncertain < 0.5 <= needs a doctor.
    y = np.array([1, 1, 1, 0, 0])
    p = np.array(
        [
            [0.9, 0.8, 0.6],  # malignant, needs a doctor in every view: stable
            [0.4, 0.6, 0.3],  # malignant, uncertain / needs a doctor: outcome moves, always flagged
            [0.3, 0.1, 0.25],  # malignant, flagged as is, low risk when turned: the costly move
            [0.1, 0.15, 0.05],  # benign, low risk in every view
            [0.1, 0.3, 0.1],  # benign, flagged in one view
        ]
    )
    r = evaluation.orientation_consistency(y, p, 0.5, 0.2, ["id", "h", "t"])
    assert r["views"] == ["id", "h", "t"]
    assert r["outcome_changes"] == pytest.approx(3 / 5)
    assert r["flag_changes"] == pytest.approx(2 / 5)
    assert r["malignant_flag_changes"] == pytest.approx(1 / 3)
    assert r["malignant_not_flagged_as_is"] == 0.0
    assert r["malignant_not_flagged_in_some_view"] == pytest.approx(1 / 3)
    assert r["sensitivity_by_view"] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert r["specificity_by_view"] == [1.0, 1.0, 1.0]
    assert r["auc_by_view"][0] == evaluation.roc_auc(y, p[:, 0])
    # Without an uncertain band, "flagged" is needs a doctor alone.
    alone = evaluation.orientation_consistency(y, p, 0.5)
    assert alone["flag_changes"] == pytest.approx(1 / 5) and alone["malignant_not_flagged_as_is"] == pytest.approx(
        2 / 3
    )
    assert alone["views"] == ["view 0", "view 1", "view 2"]
    # One view: nothing can change.
    assert evaluation.orientation_consistency(y, p[:, :1], 0.5, 0.2)["outcome_changes"] == 0.0
    with pytest.raises(ValueError, match="n images, n views"):
        evaluation.orientation_consistency(y, p[:, 0], 0.5)


def test_boundary_margin_covers_the_outcomes_that_move_with_the_view():
    # The same five images as above: threshold 0.5 (logit 0), uncertain from 0.2 (logit -1.386).
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([[0.9, 0.8, 0.6], [0.4, 0.6, 0.3], [0.3, 0.1, 0.25], [0.1, 0.15, 0.05], [0.1, 0.3, 0.1]])
    z = evaluation.logit
    # Distance of each image as it is to its nearest boundary, in logits.
    assert evaluation.boundary_distance(p[:, 0], 0.5, 0.2) == pytest.approx(
        [z(0.9), -z(0.4), z(0.3) - z(0.2), z(0.2) - z(0.1), z(0.2) - z(0.1)]
    )
    assert float(evaluation.boundary_distance(0.4, 0.5)) == pytest.approx(-z(0.4))  # no band: the threshold alone
    # The three that move lie 0.405, 0.539 and 0.811 from a boundary: covering 0.9 of them takes 0.811,
    # which also notes the stable fourth image at exactly that distance.
    fit = evaluation.fit_boundary_margin(p, 0.5, 0.2)
    assert fit["logit"] == pytest.approx(z(0.2) - z(0.1))
    assert (
        fit["validation_outcome_changes"],
        fit["validation_noted"],
        fit["validation_changes_noted"],
    ) == pytest.approx((3 / 5, 4 / 5, 1.0))
    half = evaluation.fit_boundary_margin(p, 0.5, 0.2, coverage=0.5)
    assert half["logit"] == pytest.approx(z(0.3) - z(0.2)) and half["validation_changes_noted"] == pytest.approx(2 / 3)
    # One view, or a model whose answer never moves: no margin, no note.
    still = evaluation.fit_boundary_margin(p[:, :1], 0.5, 0.2)
    assert (still["logit"], still["validation_noted"], still["validation_changes_noted"]) == (0.0, 0.0, None)

    # The same margin measured on other images: what share gets the note, and how many of the moves it holds.
    r = evaluation.orientation_consistency(y, p, 0.5, 0.2, boundary_margin=half["logit"])
    assert r["noted"] == pytest.approx(2 / 5) and r["outcome_changes_noted"] == pytest.approx(2 / 3)
    assert r["noted_outcome_changes"] == 1.0 and r["malignant_flag_changes_noted"] == 1.0
    assert "noted" not in evaluation.orientation_consistency(y, p, 0.5, 0.2)
    # Where nothing moves there is nothing for the note to hold: None, not NaN (which JSON cannot carry).
    steady = evaluation.orientation_consistency(y, p[:, :1].repeat(3, axis=1), 0.5, 0.2, boundary_margin=half["logit"])
    assert steady["outcome_changes_noted"] is None and steady["malignant_flag_changes_noted"] is None
    assert evaluation.orientation_consistency(y, p, 0.5, 0.2, boundary_margin=0.0)["noted_outcome_changes"] is None
    # Where the note is can be given (a model that checks close calls decides it at first look).
    given = np.array([True, False, False, False, True])
    assert (
        evaluation.orientation_consistency(y, p, 0.5, 0.2, boundary_margin=half["logit"], noted=given)["noted"] == 0.4
    )
    assert evaluation.boundary_notes(y, p[:, 0], 0.5, 0.2, half["logit"], noted=given)["noted_by_outcome"] == {
        "low_risk": 1,
        "uncertain": 0,
        "needs_doctor": 1,
    }

    # The note on the images as they are, by outcome; the malignant third image (0.3) is uncertain, not low risk.
    notes = evaluation.boundary_notes(y, p[:, 0], 0.5, 0.2, half["logit"])
    assert notes["noted"] == pytest.approx(2 / 5)
    assert notes["noted_by_outcome"] == {"low_risk": 0, "uncertain": 2, "needs_doctor": 0}
    assert (notes["malignant_low_risk"], notes["benign_low_risk"], notes["benign_low_risk_noted"]) == (0, 2, 0)
    wide = evaluation.boundary_notes([1, 0, 0], [0.15, 0.1, 0.01], 0.5, 0.2, fit["logit"])  # within 0.811 of 0.2
    assert (wide["malignant_low_risk"], wide["malignant_low_risk_noted"]) == (1, 1)
    assert (wide["benign_low_risk"], wide["benign_low_risk_noted"]) == (2, 1)
    assert evaluation.boundary_notes(y, p[:, 0], 0.5, 0.2, 0.0)["noted"] == 0.0


def test_serving_notes_a_result_within_the_saved_margin():
    from ml.serving.classifier import is_near_boundary

    meta = {"boundary_margin": {"logit": 0.5}}
    assert is_near_boundary(0.45, 0.5, 0.2, meta) and is_near_boundary(0.15, 0.5, 0.2, meta)
    assert not is_near_boundary(0.9, 0.5, 0.2, meta) and not is_near_boundary(0.05, 0.5, 0.2, meta)
    # no margin saved, or a margin of 0 (a model averaging all eight views): never
    assert not is_near_boundary(0.5, 0.5, 0.2, {}) and not is_near_boundary(
        0.5, 0.5, 0.2, {"boundary_margin": {"logit": 0.0}}
    )


def test_ece_from_chance_alone_is_the_ece_of_labels_drawn_from_the_probabilities():
    """ece_if_calibrated: labels drawn from the model's own probabilities, scored by the same ECE. It
    shrinks as the set grows: on a few dozen images a calibrated model still shows an ECE near 0.15."""
    from ml.reporting.metrics import ece_if_calibrated, expected_calibration_error

    p = np.random.default_rng(1).random(38)
    draws = np.random.default_rng(0).random((1000, 38)) < p
    direct = [expected_calibration_error(y, p) for y in draws]
    r = ece_if_calibrated(p, draws=1000, seed=0)
    assert r["mean"] == pytest.approx(np.mean(direct), abs=1e-9)
    assert r["p95"] == pytest.approx(np.quantile(direct, 0.95), abs=1e-9)
    assert 0.10 < r["mean"] < 0.20
    assert ece_if_calibrated(np.random.default_rng(1).random(3000))["mean"] < 0.03


def test_platt_scaling_fits_the_offset_a_fixed_prior_gets_wrong():
    """fit_platt: labels drawn from sigmoid((z - 2) / 1.5) give back an offset near -2 and a temperature
    near 1.5 from a wrong start; where the start is right, it stays there."""
    from ml.reporting.metrics import fit_platt, fit_temperature, log_loss, sigmoid

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20000)
    y = (rng.random(z.size) < sigmoid((z - 2.0) / 1.5)).astype(int)
    offset, temperature = fit_platt(y, z, start_offset=0.0)
    assert offset == pytest.approx(-2.0, abs=0.15) and temperature == pytest.approx(1.5, rel=0.05)
    fixed = fit_temperature(y, z)  # the offset fixed at 0: worse
    assert log_loss(y, sigmoid((z + offset) / temperature)) < log_loss(y, sigmoid(z / fixed))
