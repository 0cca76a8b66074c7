"""The performance page and its JSON: figures on small cases counted by hand, the
empty and one-class cases, the missed-cancer list, the date filter, the CSV export,
and who may see them. Every row is made through the services: the banded stand-in
model (needs a doctor from 0.6, uncertain from 0.4) scores photos whose redness steers
the probability, and a reviewer records each lesion's final diagnosis."""

from __future__ import annotations

import csv
import datetime
import io
from contextlib import contextmanager
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis import final_diagnoses, performance, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Prediction
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

API = "/api/performance/"
NEEDS_DOCTOR, NEEDS_DOCTOR_HIGH, UNCERTAIN, LOW_RISK, LOW_RISK_LOW = (
    40,
    80,
    0,
    -40,
    -80,
)  # p 0.778 0.925 0.5 0.222 0.075


@contextmanager
def on(day: str):
    """Uploads and records made at noon (UTC) of `day`."""
    moment = datetime.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    with mock.patch("django.utils.timezone.now", return_value=moment):
        yield


def confirmed(
    clinician,
    reviewer,
    lesion: str,
    difference: int | None,
    diagnosis: str | None,
    *,
    method: str = "histopathology",
    patient: str = "P-1",
    comment: str = "",
) -> Prediction:
    """One photo of a new lesion, scored by the model (or only stored, when `difference` is
    None: not assessed), and the lesion's final diagnosis (none when `diagnosis` is None)."""
    image = check_image(upload_file(redness_png(difference or 0), "m.png", "image/png"))
    if difference is None:
        prediction = services.store_upload(
            uploaded_by=clinician, image=image, patient_ref=patient, lesion_name=lesion
        ).prediction
    else:
        prediction = services.submit_upload(uploaded_by=clinician, image=image, patient_ref=patient, lesion_name=lesion)
    if diagnosis:
        final_diagnoses.record_final_diagnosis(
            prediction.upload.lesion,
            recorded_by=reviewer,
            diagnosis=diagnosis,
            method=method,
            diagnosed_on=datetime.date(2026, 1, 1),
            comment=comment,
        )
    return prediction


@pytest.fixture
def clinic(clinician, reviewer, banded_model):
    """Seven assessed confirmed cases, one not assessed, one unconfirmed lesion and one
    photo of no lesion. By hand, at the threshold (referred = needs a doctor):
    TP 1 (a), FP 1 (b), FN 2 (c, e), TN 3 (d, f, g); with the band (referred = needs a
    doctor or uncertain): TP 2 (a, c), FP 2 (b, d), FN 1 (e), TN 2 (f, g)."""
    cases = {
        "a": confirmed(clinician, reviewer, "a", NEEDS_DOCTOR, "melanoma_invasive"),
        "b": confirmed(clinician, reviewer, "b", NEEDS_DOCTOR_HIGH, "nevus_dysplastic"),
        "c": confirmed(clinician, reviewer, "c", UNCERTAIN, "basal_cell_carcinoma"),
        "d": confirmed(clinician, reviewer, "d", UNCERTAIN, "nevus_common", method="clinical"),
        "e": confirmed(clinician, reviewer, "e", LOW_RISK, "melanoma_in_situ"),
        "f": confirmed(clinician, reviewer, "f", LOW_RISK_LOW, "seborrheic_keratosis", method="follow_up"),
        "g": confirmed(clinician, reviewer, "g", LOW_RISK, "nevus_common", method="follow_up"),
        "pending": confirmed(clinician, reviewer, "h", None, "dermatofibroma", method="clinical"),
        "unconfirmed": confirmed(clinician, reviewer, "i", NEEDS_DOCTOR, None),
    }
    image = check_image(upload_file(redness_png(LOW_RISK), "m.png", "image/png"))
    cases["no lesion"] = services.submit_upload(uploaded_by=clinician, image=image, patient_ref="P-1")
    assert [cases[k].outcome for k in "abcdefg"] == [
        "needs_doctor",
        "needs_doctor",
        "uncertain",
        "uncertain",
        "low_risk",
        "low_risk",
        "low_risk",
    ]
    assert cases["pending"].outcome == "not_assessed"
    return cases


def report_for(user, **period):
    from diagnosis import selectors

    return performance.build_report(selectors.visible_predictions(user), **period)


def rate(r: performance.Rate) -> tuple:
    return r.successes, r.total


def test_wilson_interval_against_published_values():
    # Newcombe (1998), table I: 0/10 -> 0 to 0.2775; 5/10 -> 0.2366 to 0.7634; 81/263 -> 0.2553 to 0.3662.
    assert performance.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert performance.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert performance.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert performance.wilson_interval(0, 0) is None


def test_auc_counted_by_hand():
    # 25 pairs: 0.9, 0.8, 0.7 and 0.6 beat all five benign (20); 0.4 beats four of them (4): 24/25.
    auc, low, high = performance.auc_with_interval([0.9, 0.8, 0.7, 0.6, 0.4], [0.5, 0.3, 0.2, 0.1, 0.05])
    assert auc == pytest.approx(0.96) and low < 0.96 < high <= 1.0
    assert performance.auc_with_interval([0.5], [0.5])[0] == 0.5  # a tie counts half
    # With ties across the classes: malignant 0.7, 0.5; benign 0.5, 0.5, 0.2 -> 0.7: 3 wins; 0.5: 0.5 + 0.5 + 1 = 2; (3 + 2) / 6.
    assert performance.auc_with_interval([0.7, 0.5], [0.5, 0.5, 0.2])[0] == pytest.approx(5 / 6)


def test_auc_from_ranks_equals_every_pair_compared():
    import random

    generator = random.Random(7)
    malignant = [round(generator.random(), 1) for _ in range(40)]  # rounded: many ties
    benign = [round(generator.random() * 0.8, 1) for _ in range(50)]
    pairs = sum(1.0 if m > b else 0.5 if m == b else 0.0 for m in malignant for b in benign)
    assert performance.auc_with_interval(malignant, benign)[0] == pytest.approx(pairs / (40 * 50))


def test_roc_points_counted_by_hand():
    points = performance.roc_points([0.9, 0.5], [0.5, 0.1])
    assert [(p["threshold"], p["fpr"], p["tpr"]) for p in points] == [
        (None, 0.0, 0.0),
        (0.9, 0.0, 0.5),
        (0.5, 0.5, 1.0),
        (0.1, 1.0, 1.0),
    ]


def test_figures_match_the_hand_count(clinic, reviewer):
    report = report_for(reviewer)
    overall = report.overall
    assert len(report.cases) == 8 and report.not_assessed == 1  # the unconfirmed lesion and the loose photo are out
    assert (overall.cases, overall.malignant, overall.benign, overall.lesions) == (7, 3, 4, 7)

    at = overall.rules["threshold"]
    assert (at.true_positive, at.false_positive, at.false_negative, at.true_negative) == (1, 1, 2, 3)
    assert [rate(r) for r in (at.sensitivity, at.specificity, at.ppv, at.npv, at.referral_rate)] == [
        (1, 3),
        (3, 4),
        (1, 2),
        (3, 5),
        (2, 7),
    ]
    assert at.sensitivity.value == pytest.approx(1 / 3)
    assert (at.sensitivity.low, at.sensitivity.high) == pytest.approx(performance.wilson_interval(1, 3))

    band = overall.rules["with_uncertain_band"]
    assert (band.true_positive, band.false_positive, band.false_negative, band.true_negative) == (2, 2, 1, 2)
    assert [rate(r) for r in (band.sensitivity, band.specificity, band.ppv, band.npv, band.referral_rate)] == [
        (2, 3),
        (2, 4),
        (2, 4),
        (2, 3),
        (4, 7),
    ]

    # Seven cases: every interval is wide, and says so; too few of each class for an AUC.
    assert all(r.too_few for r in (at.sensitivity, at.specificity, band.npv, band.referral_rate))
    assert overall.auc is None and "3 and 4" in overall.auc_note
    # One model version: its figures are the overall ones.
    assert list(report.by_model_version) == [clinic["a"].model_version]
    assert report.by_model_version[clinic["a"].model_version].rules["threshold"] == at
    # Calibration bins of 0.2: 0.075 | 0.222 0.222 | 0.5 0.5 | 0.778 | 0.925, malignant 0/1, 1/2, 1/2, 1/1, 0/1.
    assert [(row["cases"], row["observed"].successes) for row in overall.calibration] == [
        (1, 0),
        (2, 1),
        (2, 1),
        (1, 1),
        (1, 0),
    ]


def test_counts_by_diagnosis_and_outcome(clinic, reviewer):
    counts = {row["diagnosis"]: (row["outcomes"], row["malignant"]) for row in report_for(reviewer).counts}
    assert counts["nevus_common"][0] == {"needs_doctor": 0, "uncertain": 1, "low_risk": 1, "not_assessed": 0}
    assert counts["dermatofibroma"][0]["not_assessed"] == 1
    assert counts["melanoma_in_situ"] == ({"needs_doctor": 0, "uncertain": 0, "low_risk": 1, "not_assessed": 0}, True)
    assert set(counts) == {
        "melanoma_invasive",
        "nevus_dysplastic",
        "basal_cell_carcinoma",
        "nevus_common",
        "melanoma_in_situ",
        "seborrheic_keratosis",
        "dermatofibroma",
    }


def test_missed_cancers_newest_first_and_first_on_the_page(clinician, reviewer, reviewer_client, banded_model):
    with on("2026-01-10"):
        older = confirmed(clinician, reviewer, "older", LOW_RISK, "melanoma_invasive")
    with on("2026-02-20"):
        newer = confirmed(clinician, reviewer, "newer", LOW_RISK_LOW, "squamous_cell_carcinoma")
        confirmed(clinician, reviewer, "caught", NEEDS_DOCTOR, "melanoma_invasive")
        confirmed(clinician, reviewer, "benign", LOW_RISK, "nevus_common", method="follow_up")
        confirmed(clinician, reviewer, "in the band", UNCERTAIN, "basal_cell_carcinoma")

    assert [case.prediction.pk for case in report_for(reviewer).missed] == [newer.pk, older.pk]

    page = reviewer_client.get(reverse("diagnosis:performance")).content.decode()
    missed = page[page.index('id="missed"') : page.index("</section>", page.index('id="missed"'))]
    assert "Missed cancers: low risk, final diagnosis malignant (2)" in missed
    links = [reverse("diagnosis:result", args=[p.pk]) for p in (newer, older)]
    assert all(link in missed for link in links) and missed.index(links[0]) < missed.index(links[1])
    assert page.index('id="missed"') < page.index('class="card summary"')  # before any figure

    body = reviewer_client.get(API).json()
    assert [row["prediction"] for row in body["missed_cancers"]] == [newer.pk, older.pk]


def test_the_date_range_filters_by_upload_date(clinician, reviewer, reviewer_client, banded_model):
    with on("2026-01-10"):
        confirmed(clinician, reviewer, "january", LOW_RISK, "melanoma_invasive")
    with on("2026-02-20"):
        confirmed(clinician, reviewer, "february", NEEDS_DOCTOR, "melanoma_invasive")

    assert len(report_for(reviewer, start=datetime.date(2026, 2, 1)).cases) == 1
    assert len(report_for(reviewer, end=datetime.date(2026, 1, 10)).missed) == 1  # the end day is included
    body = reviewer_client.get(API, {"start": "2026-02-01", "end": "2026-02-28"}).json()
    assert body["confirmed_predictions"] == 1 and body["missed_cancers"] == [] and body["start"] == "2026-02-01"
    page = reviewer_client.get(reverse("diagnosis:performance"), {"start": "2026-01-01", "end": "2026-01-31"})
    assert "Missed cancers: low risk, final diagnosis malignant (1)" in page.content.decode()


@pytest.mark.parametrize(
    "params, words",
    [
        ({"start": "last week"}, "The start date 'last week' is not a date: use YYYY-MM-DD."),
        ({"end": "2026-02-30"}, "The end date '2026-02-30' is not a date"),
        ({"start": "2026-03-01", "end": "2026-02-01"}, "The start date 2026-03-01 is after the end date 2026-02-01."),
    ],
)
def test_a_wrong_date_is_refused_in_words(reviewer_client, params, words):
    response = reviewer_client.get(API, params)
    assert response.status_code == 400 and words in response.json()["detail"]
    page = reviewer_client.get(reverse("diagnosis:performance"), params)
    assert page.status_code == 400 and words.replace("'", "&#x27;") in page.content.decode()
    assert reviewer_client.get(reverse("diagnosis:performance_csv"), params).status_code == 400


def test_empty(reviewer, reviewer_client):
    report = report_for(reviewer)
    assert report.cases == [] and report.missed == [] and report.counts == []
    at = report.overall.rules["threshold"]
    assert at.sensitivity.value is None and at.sensitivity.too_few and at.referral_rate.total == 0
    assert report.overall.roc == [] and report.overall.calibration == []

    page = reviewer_client.get(reverse("diagnosis:performance"))
    text = page.content.decode()
    assert page.status_code == 200
    assert "No assessed confirmed cases: too few confirmed cases to say." in text
    assert "biased sample" in text and "<img" not in text
    body = reviewer_client.get(API).json()
    assert body["confirmed_predictions"] == 0 and body["overall"]["rules"]["threshold"]["sensitivity"]["value"] is None


def test_one_class_only(clinician, reviewer, reviewer_client, banded_model):
    confirmed(clinician, reviewer, "one", LOW_RISK, "nevus_common", method="follow_up")
    confirmed(clinician, reviewer, "two", NEEDS_DOCTOR, "nevus_dysplastic")
    overall = report_for(reviewer).overall
    at = overall.rules["threshold"]
    assert (overall.malignant, overall.benign) == (0, 2)
    assert at.sensitivity.value is None and at.npv.value == 1.0 and rate(at.specificity) == (1, 2)
    assert overall.auc is None and overall.roc == []  # no ROC curve without both classes
    page = reviewer_client.get(reverse("diagnosis:performance")).content.decode()
    assert "too few confirmed cases to say" in page and "Calibration plot" in page and "ROC curve" not in page


def test_enough_cases_give_a_narrow_interval_an_auc_and_both_plots(clinician, reviewer, reviewer_client, banded_model):
    # 6 malignant all referred, 6 benign none referred: AUC 1, and plots drawn.
    for index in range(6):
        confirmed(clinician, reviewer, f"m{index}", NEEDS_DOCTOR_HIGH, "melanoma_invasive")
        confirmed(clinician, reviewer, f"b{index}", LOW_RISK_LOW, "nevus_common", method="follow_up")
    overall = report_for(reviewer).overall
    assert overall.auc == 1.0 and overall.rules["threshold"].sensitivity.value == 1.0
    page = reviewer_client.get(reverse("diagnosis:performance")).content.decode()
    assert "AUC <strong>1.000</strong>" in page
    assert page.count('src="data:image/png;base64,') == 2


def test_the_page_says_the_sample_is_biased(reviewer_client):
    page = reviewer_client.get(reverse("diagnosis:performance")).content.decode()
    assert "Confirmed cases are a biased sample" in page and "histology far more often" in page


def test_the_csv_is_the_confirmed_cases_pseudonymous(clinic, reviewer, reviewer_client):
    response = reviewer_client.get(reverse("diagnosis:performance_csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 8
    assert {int(row["prediction"]) for row in rows} == {clinic[k].pk for k in [*"abcdefg", "pending"]}
    by_id = {int(row["prediction"]): row for row in rows}
    missed = by_id[clinic["e"].pk]
    assert (missed["outcome"], missed["final_diagnosis"], missed["malignant"], missed["patient_ref"]) == (
        "low_risk",
        "melanoma_in_situ",
        "True",
        "P-1",
    )
    # Pseudonymous: no user names, notes or comments.
    assert set(rows[0]) == set(performance.CSV_COLUMNS)
    assert "clinician" not in response.content.decode() and "reviewer" not in response.content.decode()
    event = AuditEvent.objects.get(action="export")
    assert (event.user, event.details["rows"]) == (reviewer, 8)


def test_a_clinician_without_the_permission_sees_none_of_it(logged_in, client, token_headers):
    assert logged_in.get(reverse("diagnosis:performance")).status_code == 403
    assert logged_in.get(reverse("diagnosis:performance_csv")).status_code == 403
    assert client.get(API, **token_headers).status_code == 403
    assert not AuditEvent.objects.filter(action="export").exists()
    assert 'href="/performance/"' not in logged_in.get(reverse("diagnosis:history")).content.decode()


def test_the_reviewer_finds_it_in_the_menu(reviewer_client):
    assert 'href="/performance/"' in reviewer_client.get(reverse("diagnosis:history")).content.decode()


def test_timezone_aware_dates(clinician, reviewer, banded_model):
    # A sanity check of the `on` helper the date tests rely on.
    with on("2026-01-10"):
        prediction = confirmed(clinician, reviewer, "x", LOW_RISK, None)
    assert timezone.localtime(prediction.upload.created_at).date() == datetime.date(2026, 1, 10)


def test_figures_per_model_version_and_overall(clinician, reviewer, reviewer_client, settings, tmp_path, banded_model):
    from ml.serving import classifier
    from ml.testing import write_standin_model

    # Version 1 (the banded stand-in): a melanoma referred. Version 2 (threshold 0.5, no band): a melanoma missed
    # and a nevus not referred.
    confirmed(clinician, reviewer, "v1 melanoma", NEEDS_DOCTOR, "melanoma_invasive")
    settings.SKINCARE_MODEL_DIR = write_standin_model(tmp_path / "v2", threshold=0.5, version="standin-v2")
    classifier.reset()
    confirmed(clinician, reviewer, "v2 melanoma", LOW_RISK, "melanoma_invasive")
    confirmed(clinician, reviewer, "v2 nevus", LOW_RISK_LOW, "nevus_common", method="follow_up")

    report = report_for(reviewer)
    assert set(report.by_model_version) == {"standin-test", "standin-v2"}
    assert rate(report.by_model_version["standin-test"].rules["threshold"].sensitivity) == (1, 1)
    assert rate(report.by_model_version["standin-v2"].rules["threshold"].sensitivity) == (0, 1)
    assert rate(report.overall.rules["threshold"].sensitivity) == (1, 2)
    assert report.by_model_version["standin-test"].uncertain_band
    assert not report.by_model_version["standin-v2"].uncertain_band

    page = reviewer_client.get(reverse("diagnosis:performance")).content.decode()
    assert "All model versions" in page and "Model standin-test" in page and "Model standin-v2" in page
    assert "no uncertain band on these predictions: the same" in page
    body = reviewer_client.get(API).json()
    assert set(body["by_model_version"]) == {"standin-test", "standin-v2"}
    assert body["overall"]["rules"]["threshold"]["sensitivity"]["successes"] == 1
