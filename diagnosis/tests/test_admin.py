"""The reviewer's admin: lists, filters, search, review form, bulk actions, read-only model output."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.tests.helpers import BLUE, RED, image_bytes, upload_file
from ml.serving import classifier

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:diagnosis_prediction_changelist")


def submit(user, color=RED, patient_ref="", note=""):
    return services.submit_upload(
        uploaded_by=user, image=check_image(upload_file(image_bytes(color=color))), patient_ref=patient_ref, note=note
    )


@pytest.fixture
def predictions(standin_model, clinician):
    return {
        "flagged": submit(clinician, RED, "PT-1", "left shoulder, changed colour"),
        "low": submit(clinician, BLUE, "PT-2"),
        "flagged_reviewed": submit(clinician, RED, "PT-3"),
    }


def listed_ids(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def test_changelists_show_thumbnails_and_facts(reviewer_client, predictions):
    page = reviewer_client.get(CHANGELIST).content.decode()
    flagged = predictions["flagged"]
    assert flagged.upload.thumbnail.url in page
    for text in ("Needs a doctor", "Low risk", "standin-test", f"{flagged.probability_malignant:.3f}", "Not reviewed"):
        assert text in page
    uploads_page = reviewer_client.get(reverse("admin:diagnosis_upload_changelist")).content.decode()
    assert flagged.upload.thumbnail.url in uploads_page and "PT-1" in uploads_page
    # The thumbnails the admin links to are served to the reviewer.
    assert reviewer_client.get(flagged.upload.thumbnail.url).status_code == 200


def test_flagged_unreviewed_work_list(reviewer_client, predictions, reviewer):
    services.record_review(predictions["flagged_reviewed"], reviewer=reviewer, decision="confirmed")
    assert listed_ids(reviewer_client.get(CHANGELIST, {"queue": "review"})) == {predictions["flagged"].pk}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"outcome__exact": "needs_doctor"}, {"flagged", "flagged_reviewed"}),
        ({"outcome__exact": "low_risk"}, {"low"}),
        ({"reviewed": "no"}, {"flagged", "low", "flagged_reviewed"}),
        ({"model_version__exact": "standin-test"}, {"flagged", "low", "flagged_reviewed"}),
        ({"model_version__exact": "other"}, set()),
        ({"q": "PT-2"}, {"low"}),
        ({"q": "shoulder"}, {"flagged"}),  # search reaches the note
    ],
)
def test_filters_and_search(reviewer_client, predictions, params, expected):
    assert listed_ids(reviewer_client.get(CHANGELIST, params)) == {predictions[k].pk for k in expected}


def test_date_filter(reviewer_client, predictions):
    year = timezone.localtime().year
    assert len(listed_ids(reviewer_client.get(CHANGELIST, {"created_at__year": year}))) == 3
    assert listed_ids(reviewer_client.get(CHANGELIST, {"created_at__year": year - 1})) == set()


def test_bulk_confirm_and_dismiss(reviewer_client, predictions, reviewer):
    flagged, low = predictions["flagged"], predictions["low"]
    response = reviewer_client.post(
        CHANGELIST, {"action": "mark_confirmed", "_selected_action": [flagged.pk]}, follow=True
    )
    assert "1 prediction(s) marked" in response.content.decode()
    reviewer_client.post(CHANGELIST, {"action": "mark_dismissed", "_selected_action": [low.pk]})
    flagged.refresh_from_db()
    low.refresh_from_db()
    assert (flagged.review_decision, flagged.reviewed_by, flagged.is_reviewed) == ("confirmed", reviewer, True)
    assert (low.review_decision, low.reviewed_by, low.is_reviewed) == ("dismissed", reviewer, True)
    assert listed_ids(reviewer_client.get(CHANGELIST, {"reviewed": "yes"})) == {flagged.pk, low.pk}


def test_review_form_records_decision_comment_who_and_when_but_not_model_output(reviewer_client, predictions, reviewer):
    prediction = predictions["flagged"]
    model_said = {
        f: getattr(prediction, f)
        for f in (
            "status",
            "outcome",
            "label",
            "probability_malignant",
            "threshold",
            "model_version",
            "elapsed_ms",
            "predicted_at",
        )
    }
    url = reverse("admin:diagnosis_prediction_change", args=[prediction.pk])
    page = reviewer_client.get(url).content.decode()
    assert 'name="review_decision"' in page and 'name="probability_malignant"' not in page

    response = reviewer_client.post(
        url,
        {
            "review_decision": "dismissed",
            "review_comment": "Seborrhoeic keratosis on dermoscopy.",
            # A tampered form trying to rewrite what the model said:
            "probability_malignant": "0.01",
            "outcome": "low_risk",
            "label": "benign",
            "threshold": "0.99",
            "model_version": "forged",
            "status": "failed",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    prediction.refresh_from_db()
    assert prediction.review_decision == "dismissed"
    assert prediction.review_comment == "Seborrhoeic keratosis on dermoscopy."
    assert prediction.reviewed_by == reviewer and prediction.reviewed_at is not None
    assert {f: getattr(prediction, f) for f in model_said} == model_said


def test_other_decision_needs_a_comment(reviewer_client, predictions):
    prediction = predictions["low"]
    url = reverse("admin:diagnosis_prediction_change", args=[prediction.pk])
    response = reviewer_client.post(url, {"review_decision": "other", "review_comment": "", "_save": "Save"})
    assert response.status_code == 200
    assert "Say in the comment what the other decision is." in response.content.decode()
    prediction.refresh_from_db()
    assert not prediction.is_reviewed
    reviewer_client.post(url, {"review_decision": "other", "review_comment": "Biopsy booked", "_save": "Save"})
    prediction.refresh_from_db()
    assert prediction.review_decision == "other" and prediction.review_state == "Other (see comment)"


def test_no_add_or_delete_in_the_admin(admin_client, predictions):
    assert admin_client.get(reverse("admin:diagnosis_prediction_add")).status_code == 403
    assert admin_client.get(reverse("admin:diagnosis_upload_add")).status_code == 403
    pk = predictions["low"].pk
    assert admin_client.get(reverse("admin:diagnosis_prediction_delete", args=[pk])).status_code == 403
    actions = admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert "delete_selected" not in dict(actions)


def test_upload_change_form_keeps_the_image_facts_read_only(admin_client, predictions):
    upload = predictions["low"].upload
    url = reverse("admin:diagnosis_upload_change", args=[upload.pk])
    assert admin_client.get(url).status_code == 200
    admin_client.post(
        url,
        {
            "patient_ref": "PT-2b",
            "body_site": "",
            "note": "corrected",
            "width": "1",
            "original_format": "GIF",
            "prediction-TOTAL_FORMS": "1",
            "prediction-INITIAL_FORMS": "1",
            "prediction-MIN_NUM_FORMS": "0",
            "prediction-MAX_NUM_FORMS": "1",
            "prediction-0-id": str(predictions["low"].pk),
            "prediction-0-upload": str(upload.pk),
            "_save": "Save",
        },
    )
    upload.refresh_from_db()
    assert (upload.patient_ref, upload.note) == ("PT-2b", "corrected")
    assert (upload.width, upload.original_format) == (64, "JPEG")


def test_retry_action(reviewer_client, no_model, clinician, settings, standin_model_dir):
    prediction = submit(clinician)
    assert prediction.status == "no_model"
    assert listed_ids(reviewer_client.get(CHANGELIST, {"queue": "not_assessed"})) == {prediction.pk}
    settings.SKINCARE_MODEL_DIR = standin_model_dir
    classifier.reset()
    response = reviewer_client.post(CHANGELIST, {"action": "retry", "_selected_action": [prediction.pk]}, follow=True)
    assert "Retried: 1 done." in response.content.decode()
    prediction.refresh_from_db()
    assert prediction.status == "done" and prediction.outcome == "needs_doctor"


def test_clinician_without_staff_cannot_reach_the_admin(logged_in):
    response = logged_in.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_change_form_is_for_people_rounded_numbers_a_measures_table_the_heat_map_beside_the_photo(
    admin_client, clinician, gated_model
):
    """Issue 32: no 0.23825723194660747 and no raw JSON."""
    import re

    from diagnosis.models import Prediction
    from diagnosis.tests.helpers import lesion_on_skin_png

    prediction = services.submit_upload(
        uploaded_by=clinician, image=check_image(upload_file(lesion_on_skin_png(), "m.png", "image/png"))
    )
    assert prediction.status == "done" and prediction.heatmap and prediction.gate_measures
    Prediction.objects.filter(pk=prediction.pk).update(probability_malignant=0.23825723194660747, elapsed_ms=12.3456789)
    page = admin_client.get(reverse("admin:diagnosis_prediction_change", args=[prediction.pk])).content.decode()
    assert "0.238" in page and "0.23825" not in page and "12 ms" in page and "12.345" not in page
    table = re.search(r'<table class="measures">.*?</table>', page, re.S).group(0)
    for name, value in prediction.gate_measures.items():
        assert f"<td>{name.capitalize()}</td><td>{value:.3f}</td>" in table
    assert '{"' not in page.split('id="prediction_form"')[1]  # no raw JSON
    # the heat map is in the same block as the photo, right after it
    block = re.search(r'<div style="display:flex;gap:1rem;flex-wrap:wrap">(.*?)</div>', page, re.S).group(1)
    assert block.index(prediction.upload.image.url) < block.index(prediction.heatmap.url)
