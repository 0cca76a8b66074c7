"""A lesion's final diagnosis: recorded by a reviewer on the page, the API or the admin,
applied to every photo of the lesion, changeable, with the audit trail keeping each
earlier version; refused, with nothing stored, to a clinician without the reviewer's
permission and for values that make no sense."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from diagnosis import final_diagnoses, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, FinalDiagnosis, Lesion
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

TODAY = datetime.date.today()


def photo_of_lesion(clinician, *, patient="P-001", lesion="left shoulder", difference=40):
    image = check_image(upload_file(redness_png(difference), "m.png", "image/png"))
    return services.submit_upload(uploaded_by=clinician, image=image, patient_ref=patient, lesion_name=lesion)


def outcome_url(lesion_id: int) -> str:
    return f"/api/lesions/{lesion_id}/outcome/"


def form_data(**overrides):
    data = {
        "diagnosis": "melanoma_invasive",
        "method": "histopathology",
        "diagnosed_on": "2026-01-05",
        "comment": "Breslow 0.6 mm",
    }
    data.update(overrides)
    return data


def test_a_reviewer_records_it_on_the_page_and_every_photo_of_the_lesion_shows_it(
    reviewer_client, reviewer, clinician, banded_model
):
    first = photo_of_lesion(clinician)
    second = photo_of_lesion(clinician, difference=-40)
    lesion = first.upload.lesion
    assert second.upload.lesion == lesion

    page = reviewer_client.get(reverse("diagnosis:final_diagnosis", args=[lesion.pk])).content.decode()
    assert "No final diagnosis recorded yet" in page and "Record the final diagnosis" in page

    response = reviewer_client.post(reverse("diagnosis:final_diagnosis", args=[lesion.pk]), form_data())
    assert response.status_code == 302
    final = FinalDiagnosis.objects.get()
    assert (final.lesion, final.diagnosis, final.method, final.diagnosed_on, final.comment, final.recorded_by) == (
        lesion,
        "melanoma_invasive",
        "histopathology",
        datetime.date(2026, 1, 5),
        "Breslow 0.6 mm",
        reviewer,
    )
    assert final.is_malignant

    # Applied to its predictions: both result pages and the lesion page say it, with a link.
    link = reverse("diagnosis:final_diagnosis", args=[lesion.pk])
    for prediction in (first, second):
        page = reviewer_client.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
        assert "Melanoma, invasive (histopathology, 2026-01-05)" in page and link in page
    page = reviewer_client.get(reverse("diagnosis:lesion", args=[lesion.pk])).content.decode()
    assert "Melanoma, invasive" in page and link in page


def test_the_result_page_offers_a_reviewer_to_record_it(reviewer_client, clinician, banded_model):
    prediction = photo_of_lesion(clinician)
    page = reviewer_client.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    assert "record the final diagnosis" in page
    assert reverse("diagnosis:final_diagnosis", args=[prediction.upload.lesion_id]) in page


def test_a_change_is_audited_with_what_it_was(reviewer, reviewer_client, clinician, banded_model):
    lesion = photo_of_lesion(clinician).upload.lesion
    final_diagnoses.record_final_diagnosis(
        lesion,
        recorded_by=reviewer,
        diagnosis="nevus_dysplastic",
        method="clinical",
        diagnosed_on=datetime.date(2026, 1, 2),
    )
    reviewer_client.post(reverse("diagnosis:final_diagnosis", args=[lesion.pk]), form_data())

    assert FinalDiagnosis.objects.count() == 1
    assert FinalDiagnosis.objects.get().diagnosis == "melanoma_invasive"
    events = list(AuditEvent.objects.filter(action="final_diagnosis").order_by("at", "id"))
    assert [(e.user, e.via, e.object_id, e.details["diagnosis"]) for e in events] == [
        (reviewer, "page", lesion.pk, "nevus_dysplastic"),
        (reviewer, "page", lesion.pk, "melanoma_invasive"),
    ]
    assert events[0].details["previous"] is None
    assert events[1].details["previous"] == {
        "diagnosis": "nevus_dysplastic",
        "method": "clinical",
        "diagnosed_on": "2026-01-02",
        "comment": "",
    }
    # The page lists the changes, the earlier one with what it was.
    page = reviewer_client.get(reverse("diagnosis:final_diagnosis", args=[lesion.pk])).content.decode()
    assert "Nevus, dysplastic, dermatologist&#x27;s clinical diagnosis, 2026-01-02" in page


def test_a_clinician_without_the_permission_is_refused_and_nothing_is_stored(
    logged_in, client, clinician, token_headers, banded_model
):
    lesion = photo_of_lesion(clinician).upload.lesion
    events_before = AuditEvent.objects.count()

    page = logged_in.get(reverse("diagnosis:final_diagnosis", args=[lesion.pk])).content.decode()
    assert "No final diagnosis recorded yet" in page and "Save the final diagnosis" not in page
    assert logged_in.post(reverse("diagnosis:final_diagnosis", args=[lesion.pk]), form_data()).status_code == 403
    response = client.post(outcome_url(lesion.pk), form_data(), content_type="application/json", **token_headers)
    assert response.status_code == 403 and "reviewer" in response.json()["detail"]

    assert not FinalDiagnosis.objects.exists()
    assert AuditEvent.objects.filter(action="final_diagnosis").count() == 0
    assert AuditEvent.objects.count() == events_before + 1  # the page view only


def test_the_api_records_and_changes_it(client, reviewer, clinician, banded_model):
    from rest_framework.authtoken.models import Token

    headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=reviewer).key}"}
    lesion = photo_of_lesion(clinician).upload.lesion

    response = client.post(outcome_url(lesion.pk), form_data(), content_type="application/json", **headers)
    assert response.status_code == 201, response.content
    body = response.json()["final_diagnosis"]
    assert (body["diagnosis"], body["malignant"], body["method"], body["diagnosed_on"], body["recorded_by"]) == (
        "melanoma_invasive",
        True,
        "histopathology",
        "2026-01-05",
        "reviewer",
    )

    # Applied to the lesion's predictions in the API too.
    prediction_id = lesion.uploads.get().prediction.pk
    detail = client.get(f"/api/predictions/{prediction_id}/", **headers).json()
    assert detail["final_diagnosis"]["diagnosis"] == "melanoma_invasive"

    response = client.post(
        outcome_url(lesion.pk),
        form_data(diagnosis="nevus_common", method="follow_up", comment=""),
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200
    assert client.get(outcome_url(lesion.pk), **headers).json()["final_diagnosis"]["diagnosis"] == "nevus_common"
    assert list(AuditEvent.objects.filter(action="final_diagnosis").values_list("via", flat=True)) == ["api", "api"]


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"diagnosis": "mole"}, "diagnosis", "Unknown diagnosis"),
        ({"method": "guess"}, "method", "Unknown way of establishing it"),
        ({"diagnosed_on": "5 Jan"}, "diagnosed_on", "YYYY-MM-DD"),
        ({"diagnosed_on": ""}, "diagnosed_on", "Give the date"),
        ({"diagnosed_on": (TODAY + datetime.timedelta(days=2)).isoformat()}, "__all__", "in the future"),
        ({"diagnosis": "other_malignant", "comment": ""}, "__all__", "what the other diagnosis is"),
        ({"diagnosis": "melanoma_in_situ", "method": "follow_up"}, "__all__", "Follow-up without change establishes"),
    ],
)
def test_the_api_refuses_values_that_make_no_sense(client, reviewer, clinician, banded_model, overrides, field, words):
    from rest_framework.authtoken.models import Token

    headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=reviewer).key}"}
    lesion = photo_of_lesion(clinician).upload.lesion
    response = client.post(outcome_url(lesion.pk), form_data(**overrides), content_type="application/json", **headers)
    assert response.status_code == 400
    assert words in " ".join(response.json()[field])
    assert not FinalDiagnosis.objects.exists()


def test_the_api_refuses_a_body_that_is_not_an_object(client, reviewer, clinician, banded_model):
    from rest_framework.authtoken.models import Token

    headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=reviewer).key}"}
    lesion = photo_of_lesion(clinician).upload.lesion
    for body in ('["melanoma_invasive"]', "{not json"):
        response = client.post(outcome_url(lesion.pk), body, content_type="application/json", **headers)
        assert response.status_code == 400 and "detail" in response.json()
    assert not FinalDiagnosis.objects.exists()


def test_the_service_refuses_in_words_and_stores_nothing(reviewer, clinician, banded_model):
    lesion = photo_of_lesion(clinician).upload.lesion
    with pytest.raises(ValidationError, match="Say in the comment"):
        final_diagnoses.record_final_diagnosis(
            lesion, recorded_by=reviewer, diagnosis="other_benign", method="clinical", diagnosed_on=TODAY, comment="  "
        )
    assert not FinalDiagnosis.objects.exists() and not AuditEvent.objects.filter(action="final_diagnosis").exists()


def test_unknown_lesion_is_404(reviewer_client):
    assert reviewer_client.get(reverse("diagnosis:final_diagnosis", args=[999])).status_code == 404
    assert reviewer_client.post(outcome_url(999), form_data(), content_type="application/json").status_code == 404


def test_the_admin_records_it_through_the_service(reviewer_client, reviewer, clinician, banded_model):
    lesion = photo_of_lesion(clinician).upload.lesion
    response = reviewer_client.post(
        reverse("admin:diagnosis_finaldiagnosis_add"),
        {
            "lesion": lesion.pk,
            "diagnosis": "basal_cell_carcinoma",
            "method": "histopathology",
            "diagnosed_on": "2026-02-01",
            "comment": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    final = FinalDiagnosis.objects.get()
    assert (final.diagnosis, final.recorded_by) == ("basal_cell_carcinoma", reviewer)
    event = AuditEvent.objects.get(action="final_diagnosis")
    assert (event.via, event.object_id) == ("admin", lesion.pk)

    # Changed in the admin: the lesion stays, the trail keeps the earlier value.
    response = reviewer_client.post(
        reverse("admin:diagnosis_finaldiagnosis_change", args=[final.pk]),
        {
            "diagnosis": "squamous_cell_carcinoma",
            "method": "histopathology",
            "diagnosed_on": "2026-02-01",
            "comment": "",
        },
    )
    assert response.status_code == 302
    assert FinalDiagnosis.objects.get().diagnosis == "squamous_cell_carcinoma"
    latest = AuditEvent.objects.filter(action="final_diagnosis").order_by("-at", "-id").first()
    assert latest.details["previous"]["diagnosis"] == "basal_cell_carcinoma"
    # The admin's pages show it and its earlier version.
    assert reviewer_client.get(reverse("admin:diagnosis_finaldiagnosis_add")).status_code == 200
    assert (
        "Squamous cell carcinoma"
        in reviewer_client.get(reverse("admin:diagnosis_finaldiagnosis_changelist")).content.decode()
    )
    change_page = reviewer_client.get(
        reverse("admin:diagnosis_finaldiagnosis_change", args=[final.pk])
    ).content.decode()
    assert "basal_cell_carcinoma -&gt; squamous_cell_carcinoma" in change_page
    # Nobody deletes one.
    assert reviewer_client.post(reverse("admin:diagnosis_finaldiagnosis_delete", args=[final.pk])).status_code == 403
    assert Lesion.objects.count() == 1 and FinalDiagnosis.objects.count() == 1


def loose_photo(clinician, patient="P-001"):
    image = check_image(upload_file(redness_png(-40), "m.png", "image/png"))
    return services.submit_upload(uploaded_by=clinician, image=image, patient_ref=patient)


def test_a_photo_without_a_lesion_is_named_as_one_first(reviewer_client, reviewer, clinician, banded_model):
    prediction = loose_photo(clinician)
    page = reviewer_client.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    url = reverse("diagnosis:prediction_final_diagnosis", args=[prediction.pk])
    assert url in page and "record the final diagnosis" in page

    assert "name its lesion first" in reviewer_client.get(url).content.decode()
    response = reviewer_client.post(url, {"lesion_name": "  right   forearm "})
    lesion = Lesion.objects.get()
    assert (lesion.patient_ref, lesion.name) == ("P-001", "right forearm")
    assert response["Location"] == reverse("diagnosis:final_diagnosis", args=[lesion.pk])
    prediction.upload.refresh_from_db()
    assert prediction.upload.lesion == lesion
    event = AuditEvent.objects.get(action="link")
    assert (event.user, event.object_id, event.details) == (reviewer, lesion.pk, {"upload": prediction.upload.pk})
    # Now linked, the way from the result page leads straight to the lesion's final diagnosis.
    assert reviewer_client.get(url)["Location"] == reverse("diagnosis:final_diagnosis", args=[lesion.pk])


def test_a_photo_named_as_an_existing_lesion_becomes_its_visit(reviewer_client, clinician, banded_model):
    existing = photo_of_lesion(clinician, lesion="Left Shoulder").upload.lesion
    prediction = loose_photo(clinician)
    reviewer_client.post(
        reverse("diagnosis:prediction_final_diagnosis", args=[prediction.pk]), {"lesion_name": "left shoulder"}
    )
    assert Lesion.objects.count() == 1
    assert existing.uploads.count() == 2


def test_naming_a_lesion_is_refused_in_words(reviewer_client, clinician, banded_model):
    from django.test import Client

    prediction = loose_photo(clinician)
    url = reverse("diagnosis:prediction_final_diagnosis", args=[prediction.pk])
    not_a_reviewer = Client()
    not_a_reviewer.force_login(clinician)
    assert not_a_reviewer.post(url, {"lesion_name": "back"}).status_code == 403
    response = reviewer_client.post(url, {"lesion_name": "   "})
    assert response.status_code == 400 and "Name the lesion" in response.content.decode()

    anonymous = loose_photo(clinician, patient="")
    url = reverse("diagnosis:prediction_final_diagnosis", args=[anonymous.pk])
    page = reviewer_client.get(reverse("diagnosis:result", args=[anonymous.pk])).content.decode()
    assert "this photo has no patient reference" in page and url not in page
    response = reviewer_client.post(url, {"lesion_name": "back"})
    assert response.status_code == 400 and "has no patient reference" in response.content.decode()
    assert not Lesion.objects.exists() and not AuditEvent.objects.filter(action="link").exists()
