"""History: newest first, paginated, filters by outcome and unreviewed, search by patient."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import Prediction
from diagnosis.tests.helpers import BLUE, RED, image_bytes, upload_file

pytestmark = pytest.mark.django_db


def submit(user, color, patient_ref=""):
    return services.submit_upload(
        uploaded_by=user, image=check_image(upload_file(image_bytes(color=color))), patient_ref=patient_ref
    )


def shown_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/predictions/(\d+)/"><img', response.content.decode())]


@pytest.fixture
def history_data(standin_model, clinician, other_clinician, django_user_model):
    reviewer = django_user_model.objects.create_user("reviewer", is_staff=True)
    a = submit(clinician, RED, "PT-100")  # flagged, will be reviewed
    b = submit(other_clinician, RED, "PT-200")  # flagged, not reviewed
    c = submit(clinician, BLUE, "PT-100")  # not flagged, not reviewed
    d = submit(other_clinician, BLUE, "XY-300")  # not flagged, reviewed
    services.record_review(a, reviewer=reviewer, decision="confirmed")
    services.record_review(d, reviewer=reviewer, decision="dismissed")
    return {"a": a, "b": b, "c": c, "d": d}


def test_every_upload_newest_first_with_its_facts(logged_in, history_data):
    response = logged_in.get(reverse("diagnosis:history"))
    ids = shown_ids(response)
    assert ids == [history_data[k].pk for k in "dcba"]
    page = response.content.decode()
    for word in ("Needs a doctor", "Low risk", "colleague", "clinician", "Not reviewed", "Confirmed: needs a doctor"):
        assert word in page
    b = Prediction.objects.get(pk=history_data["b"].pk)
    assert f"{b.probability_malignant:.3f}" in page
    assert b.upload.thumbnail.url in page


def test_filter_flagged(logged_in, history_data):
    assert shown_ids(logged_in.get(reverse("diagnosis:history"), {"outcome": "needs_doctor"})) == [
        history_data["b"].pk,
        history_data["a"].pk,
    ]


def test_filter_not_yet_reviewed(logged_in, history_data):
    assert shown_ids(logged_in.get(reverse("diagnosis:history"), {"unreviewed": "1"})) == [
        history_data["c"].pk,
        history_data["b"].pk,
    ]


def test_flagged_and_unreviewed_together(logged_in, history_data):
    ids = shown_ids(logged_in.get(reverse("diagnosis:history"), {"outcome": "needs_doctor", "unreviewed": "1"}))
    assert ids == [history_data["b"].pk]


def test_search_by_patient_reference(logged_in, history_data):
    ids = shown_ids(logged_in.get(reverse("diagnosis:history"), {"q": "pt-100"}))
    assert ids == [history_data["c"].pk, history_data["a"].pk]
    response = logged_in.get(reverse("diagnosis:history"), {"q": "nobody"})
    assert shown_ids(response) == [] and "No uploads match these filters" in response.content.decode()


def test_pagination_keeps_the_filters(logged_in, history_data, settings):
    settings.SKINCARE_HISTORY_PAGE_SIZE = 1
    first = logged_in.get(reverse("diagnosis:history"), {"outcome": "needs_doctor"})
    assert shown_ids(first) == [history_data["b"].pk]
    assert "Page 1 of 2" in first.content.decode()
    assert "?outcome=needs_doctor&amp;page=2" in first.content.decode()
    second = logged_in.get(reverse("diagnosis:history"), {"outcome": "needs_doctor", "page": "2"})
    assert shown_ids(second) == [history_data["a"].pk]
    # Out-of-range and junk page numbers land on a real page, never an error.
    assert logged_in.get(reverse("diagnosis:history"), {"page": "99"}).status_code == 200
    assert logged_in.get(reverse("diagnosis:history"), {"page": "x"}).status_code == 200


def test_empty_history(logged_in):
    assert "No uploads." in logged_in.get(reverse("diagnosis:history")).content.decode()
