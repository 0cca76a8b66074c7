"""The review queue: needs a doctor and uncertain, not yet reviewed, oldest first;
a recorded review (who, when, decision, comment) takes a case out of it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import Prediction, Upload
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

QUEUE = reverse("diagnosis:queue")
MODEL_FIELDS = (
    "status",
    "outcome",
    "label",
    "probability_malignant",
    "threshold",
    "uncertain_threshold",
    "model_version",
    "predicted_at",
    "heatmap",
)


def submit(user, difference: int, days_ago: int = 0) -> Prediction:
    prediction = services.submit_upload(
        uploaded_by=user, image=check_image(upload_file(redness_png(difference), "m.png", "image/png"))
    )
    if days_ago:
        Upload.objects.filter(pk=prediction.upload_id).update(created_at=timezone.now() - timedelta(days=days_ago))
    return prediction


def queued_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/predictions/(\d+)/\?from=queue"><img', response.content.decode())]


@pytest.fixture
def cases(banded_model, clinician):
    return {
        "uncertain_new": submit(clinician, 0, days_ago=1),
        "needs_doctor_old": submit(clinician, 40, days_ago=5),
        "low_risk": submit(clinician, -40, days_ago=9),
        "uncertain_oldest": submit(clinician, 0, days_ago=7),
    }


def test_queue_holds_needs_doctor_and_uncertain_oldest_first(logged_in, cases):
    response = logged_in.get(QUEUE)
    assert response.status_code == 200
    assert queued_ids(response) == [cases[k].pk for k in ("uncertain_oldest", "needs_doctor_old", "uncertain_new")]
    page = response.content.decode()
    assert "Uncertain — have a doctor look" in page and "Needs a doctor" in page and "3 waiting" in page


def test_not_assessed_cases_are_not_in_the_queue(logged_in, no_model, clinician):
    submit(clinician, 40)
    assert (
        queued_ids(logged_in.get(QUEUE)) == [] and "Nothing waiting for review" in logged_in.get(QUEUE).content.decode()
    )


def test_an_uncertain_case_leaves_the_queue_when_reviewed(reviewer_client, reviewer, cases):
    uncertain = cases["uncertain_oldest"]
    model_said = {f: getattr(uncertain, f) for f in MODEL_FIELDS}
    page = reviewer_client.get(reverse("diagnosis:result", args=[uncertain.pk]), {"from": "queue"}).content.decode()
    assert 'name="decision"' in page and "Record the review" in page

    response = reviewer_client.post(
        reverse("diagnosis:review", args=[uncertain.pk]),
        {"decision": "confirmed", "comment": "Irregular network, refer.", "from": "queue"},
    )
    assert response.status_code == 302 and response["Location"] == QUEUE
    uncertain.refresh_from_db()
    assert uncertain.review_decision == "confirmed" and uncertain.review_comment == "Irregular network, refer."
    assert uncertain.reviewed_by == reviewer and uncertain.reviewed_at is not None
    assert {f: getattr(uncertain, f) for f in MODEL_FIELDS} == model_said  # never rewritten

    followed = reviewer_client.get(QUEUE)
    assert queued_ids(followed) == [cases["needs_doctor_old"].pk, cases["uncertain_new"].pk]
    assert "Review recorded for #" in followed.content.decode()


def test_review_from_the_result_page_returns_there(reviewer_client, cases):
    case = cases["needs_doctor_old"]
    response = reviewer_client.post(reverse("diagnosis:review", args=[case.pk]), {"decision": "dismissed"})
    assert response["Location"] == reverse("diagnosis:result", args=[case.pk])
    assert case.pk not in queued_ids(reviewer_client.get(QUEUE))


def test_other_decision_needs_a_comment_on_the_site_too(reviewer_client, cases):
    case = cases["uncertain_new"]
    response = reviewer_client.post(
        reverse("diagnosis:review", args=[case.pk]), {"decision": "other", "comment": " "}, follow=True
    )
    assert "Say in the comment what the other decision is." in response.content.decode()
    case.refresh_from_db()
    assert not case.is_reviewed and case.pk in queued_ids(reviewer_client.get(QUEUE))


def test_a_clinician_without_the_reviewer_permission_sees_the_queue_but_cannot_review(logged_in, cases):
    case = cases["uncertain_new"]
    assert case.pk in queued_ids(logged_in.get(QUEUE))
    assert 'name="decision"' not in logged_in.get(reverse("diagnosis:result", args=[case.pk])).content.decode()
    assert logged_in.post(reverse("diagnosis:review", args=[case.pk]), {"decision": "dismissed"}).status_code == 403
    case.refresh_from_db()
    assert not case.is_reviewed


def test_queue_needs_a_login(client):
    response = client.get(QUEUE)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_admin_review_filter_is_the_same_queue_oldest_first(reviewer_client, reviewer, cases):
    services.record_review(cases["needs_doctor_old"], reviewer=reviewer, decision="confirmed")
    response = reviewer_client.get(reverse("admin:diagnosis_prediction_changelist"), {"queue": "review"})
    assert [p.pk for p in response.context["cl"].result_list] == [
        cases["uncertain_oldest"].pk,
        cases["uncertain_new"].pk,
    ]
