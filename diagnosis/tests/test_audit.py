"""The audit trail: who uploaded, viewed, reviewed and retried what, and when;
readable, and only readable, in the admin."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Lesion, Prediction
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

AUDIT_CHANGELIST = reverse("admin:diagnosis_auditevent_changelist")


def image():
    return upload_file(redness_png(0), "m.png", "image/png")


def trail(**filters) -> list[tuple]:
    return [
        (e.user.get_username() if e.user else None, e.action, e.via, e.object_id)
        for e in AuditEvent.objects.filter(**filters).order_by("at", "id")
    ]


def test_upload_and_result_page_view(logged_in, banded_model):
    response = logged_in.post(reverse("diagnosis:upload"), {"image": image(), "patient_ref": "PT-5"})
    prediction = Prediction.objects.get()
    logged_in.get(response["Location"])
    assert trail() == [("clinician", "upload", "page", prediction.pk), ("clinician", "view", "page", prediction.pk)]
    upload_event = AuditEvent.objects.get(action="upload")
    assert upload_event.target == prediction and upload_event.at is not None
    assert upload_event.details == {"upload": prediction.upload_id, "patient_ref": "PT-5", "lesion": None}
    assert upload_event.object_repr == f"Prediction {prediction.pk} (PT-5)"


def test_api_upload_and_detail_view(client, token_headers, banded_model):
    body = client.post("/api/predictions/", {"image": image()}, **token_headers).json()
    client.get(f"/api/predictions/{body['id']}/", **token_headers)
    assert trail() == [("clinician", "upload", "api", body["id"]), ("clinician", "view", "api", body["id"])]


def test_review_decision_and_its_change_are_kept(reviewer_client, reviewer, banded_model, clinician):
    prediction = services.submit_upload(uploaded_by=clinician, image=check_image(image()))
    reviewer_client.post(
        reverse("diagnosis:review", args=[prediction.pk]), {"decision": "confirmed", "comment": "refer"}
    )
    prediction.refresh_from_db()
    services.record_review(prediction, reviewer=reviewer, decision="dismissed", comment="biopsy benign", via="admin")
    reviews = AuditEvent.objects.filter(action="review").order_by("at", "id")
    assert [
        (e.user, e.via, e.details["decision"], e.details["comment"], e.details["previous_decision"]) for e in reviews
    ] == [
        (reviewer, "page", "confirmed", "refer", None),
        (reviewer, "admin", "dismissed", "biopsy benign", "confirmed"),
    ]
    assert reviews[0].details["outcome"] == "uncertain" and reviews[0].details[
        "probability_malignant"
    ] == pytest.approx(0.5)


def test_retry_and_command_retry(logged_in, no_model, settings, standin_model_dir, clinician):
    from ml.serving import classifier

    first = services.submit_upload(uploaded_by=clinician, image=check_image(image()))
    second = services.submit_upload(uploaded_by=clinician, image=check_image(image()))
    settings.SKINCARE_MODEL_DIR = standin_model_dir
    classifier.reset()
    logged_in.post(reverse("diagnosis:retry", args=[first.pk]))
    call_command("retry_predictions", stdout=io.StringIO())
    assert trail(action="retry") == [("clinician", "retry", "page", first.pk), (None, "retry", "command", second.pk)]
    assert [e.details["status"] for e in AuditEvent.objects.filter(action="retry")] == ["done", "done"]


def test_lesion_page_view(logged_in, clinician):
    lesion = Lesion.objects.create(patient_ref="PT-1", name="back, centre", created_by=clinician)
    logged_in.get(reverse("diagnosis:lesion", args=[lesion.pk]))
    event = AuditEvent.objects.get()
    assert (event.user, event.action, event.target) == (clinician, "view", lesion)


def test_admin_change_form_view_is_recorded_and_shows_the_trail(reviewer_client, reviewer, standin_model, clinician):
    prediction = services.submit_upload(uploaded_by=clinician, image=check_image(image()))
    url = reverse("admin:diagnosis_prediction_change", args=[prediction.pk])
    reviewer_client.get(url)
    assert trail(action="view") == [("reviewer", "view", "admin", prediction.pk)]
    page = reviewer_client.get(url).content.decode()  # the form shows the prediction's own trail
    assert "clinician · Uploaded (Site)" in page and "reviewer · Viewed (Admin)" in page


class TestAdmin:
    @pytest.fixture
    def events(self, clinician, standin_model):
        from django.test import Client

        browser = Client()  # the clinician's own browser, not the reviewer's
        browser.force_login(clinician)
        response = browser.post(reverse("diagnosis:upload"), {"image": image(), "note": "itchy"})
        browser.get(response["Location"])
        return AuditEvent.objects.order_by("at", "id")

    def test_reviewer_reads_the_trail(self, reviewer_client, events):
        response = reviewer_client.get(AUDIT_CHANGELIST)
        assert response.status_code == 200
        assert {e.pk for e in response.context["cl"].result_list} == {e.pk for e in events}
        page = response.content.decode()
        prediction = Prediction.objects.get()  # its key, not 1: PostgreSQL's sequences do not roll back between tests
        assert "Uploaded" in page and "Viewed" in page and "clinician" in page and f"Prediction {prediction.pk}" in page
        assert reviewer_client.get(AUDIT_CHANGELIST, {"action__exact": "upload"}).context["cl"].result_count == 1

    def test_the_trail_is_read_only(self, admin_client, events):
        event = events.first()
        change_url = reverse("admin:diagnosis_auditevent_change", args=[event.pk])
        page = admin_client.get(change_url)
        assert page.status_code == 200 and 'name="action"' not in page.content.decode()
        assert admin_client.post(change_url, {"action": "review", "via": "admin"}).status_code == 403
        assert admin_client.get(reverse("admin:diagnosis_auditevent_add")).status_code == 403
        assert admin_client.get(reverse("admin:diagnosis_auditevent_delete", args=[event.pk])).status_code == 403
        assert admin_client.get(AUDIT_CHANGELIST).context["action_form"] is None  # not even a bulk delete
        event.refresh_from_db()
        assert event.action == "upload"

    def test_a_clinician_cannot_read_it(self, logged_in, events):
        response = logged_in.get(AUDIT_CHANGELIST)  # not staff
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
