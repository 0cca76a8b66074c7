"""Issue 32: the body map. A lesion is pinned on a front/back outline (upload page or its own
page), the pin is stored with the lesion, its photos' body site follows the pin, and the
patient's lesions page shows the pins, each linking to the lesion's timeline."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from diagnosis import bodymap, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Lesion, Upload
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

UPLOAD = reverse("diagnosis:upload")
CHEST = {"map_view": "front", "map_x": "50", "map_y": "55"}


def post_upload(client, **fields):
    return client.post(UPLOAD, {"image": upload_file(redness_png(-40), "m.png", "image/png"), **fields})


@pytest.mark.parametrize(
    "view, x, y, site",
    [
        ("front", 50, 55, "chest"),
        ("back", 50, 55, "back"),
        ("front", 50, 17, "face"),
        ("back", 50, 17, "scalp"),
        ("front", 50, 108, "genital"),
        ("front", 24, 70, "upper extremity"),
        ("back", 58, 205, "foot"),
        ("front", 5, 5, ""),  # beside the body
        ("side", 50, 55, ""),  # no such side
    ],
)
def test_site_at_names_the_part_under_the_pin(view, x, y, site):
    assert bodymap.site_at(view, x, y) == site


def test_every_part_is_drawn_and_reachable_by_keyboard(logged_in):
    page = logged_in.get(UPLOAD).content.decode()
    parts = re.findall(r'<(?:rect|ellipse) class="part"[^>]*>', page)
    assert len(parts) == sum(len(p) for p in bodymap.PARTS.values())
    assert all('tabindex="0"' in part and 'role="button"' in part and "aria-label=" in part for part in parts)
    assert 'name="map_view"' in page and 'name="map_x"' in page and 'name="map_y"' in page


def test_a_pin_placed_on_upload_is_kept_with_the_lesion_and_sets_the_body_site(logged_in, clinician, standin_model):
    response = post_upload(logged_in, patient_ref="PT-7", lesion_name="sternum", **CHEST)
    assert response.status_code == 302
    lesion = Lesion.objects.get()
    assert (lesion.map_view, lesion.map_x, lesion.map_y) == ("front", 50.0, 55.0)
    assert lesion.pin_site == "chest" and Upload.objects.get().body_site == "chest"
    assert AuditEvent.objects.filter(action="pin", object_id=lesion.pk).count() == 1
    body = logged_in.get(f"/api/predictions/{Upload.objects.get().prediction.pk}/").json()
    assert (
        body["lesion"]["pin"] == {"view": "front", "x": 50.0, "y": 55.0, "site": "chest"}
        and body["body_site"] == "chest"
    )
    # a later photo of the same lesion gets the pin's body site without being told
    post_upload(logged_in, lesion=lesion.pk)
    assert list(Upload.objects.values_list("body_site", flat=True)) == ["chest", "chest"]


@pytest.mark.parametrize(
    "fields, error",
    [
        (
            {**CHEST, "patient_ref": "PT-7", "lesion_name": "sternum", "body_site": "back"},
            "The lesion&#x27;s pin is on the chest, but the body site says back",
        ),
        ({**CHEST, "patient_ref": "PT-7"}, "name the lesion too"),
        (
            {"map_view": "front", "map_x": "3", "map_y": "3", "patient_ref": "PT-7", "lesion_name": "x"},
            "The pin is off the body outline",
        ),
        ({"map_view": "front", "map_x": "50", "patient_ref": "PT-7", "lesion_name": "x"}, "needs the side"),
    ],
)
def test_a_pin_that_contradicts_or_is_incomplete_is_refused_and_nothing_is_stored(
    logged_in, standin_model, fields, error
):
    response = post_upload(logged_in, **fields)
    assert response.status_code == 200 and error in response.content.decode()
    assert not Upload.objects.exists() and not Lesion.objects.exists()


def test_an_existing_pinned_lesion_refuses_a_contradicting_body_site(
    logged_in, client, token_headers, clinician, standin_model
):
    lesion = Lesion.objects.create(
        patient_ref="PT-7", name="sternum", created_by=clinician, map_view="front", map_x=50, map_y=55
    )
    response = post_upload(logged_in, lesion=lesion.pk, body_site="foot")
    assert response.status_code == 200 and "but the body site says foot" in response.content.decode()
    # the same lesion named again (whatever the capitals) rather than chosen
    response = post_upload(logged_in, patient_ref="PT-7", lesion_name="Sternum", body_site="foot")
    assert response.status_code == 200 and "but the body site says foot" in response.content.decode()
    # the API answers the same with a 400, not a stack trace
    response = client.post(
        "/api/predictions/",
        {"image": upload_file(redness_png(-40), "m.png", "image/png"), "lesion": lesion.pk, "body_site": "foot"},
        **token_headers,
    )
    assert response.status_code == 400 and "but the body site says foot" in response.json()["body_site"][0]
    assert not Upload.objects.exists()


def test_moving_the_pin_on_the_lesion_page_moves_its_photos_body_site(logged_in, clinician, standin_model):
    lesion = Lesion.objects.create(patient_ref="PT-7", name="left calf", created_by=clinician)
    services.submit_upload(
        uploaded_by=clinician,
        image=check_image(upload_file(redness_png(-40), "m.png", "image/png")),
        lesion=lesion,
        body_site="trunk",
    )
    response = logged_in.post(reverse("diagnosis:pin", args=[lesion.pk]), {"view": "back", "x": "40", "y": "150"})
    assert response.status_code == 302
    lesion.refresh_from_db()
    assert lesion.pin_site == "lower extremity" and Upload.objects.get().body_site == "lower extremity"
    event = AuditEvent.objects.get(action="pin")
    assert list(event.details["previous_body_sites"].values()) == ["trunk"]  # what it said before is kept
    # off the outline: refused with the reason, the pin stays where it was
    response = logged_in.post(reverse("diagnosis:pin", args=[lesion.pk]), {"view": "back", "x": "2", "y": "2"})
    assert response.status_code == 400 and "off the body outline" in response.content.decode()
    lesion.refresh_from_db()
    assert (lesion.map_view, lesion.map_x, lesion.map_y) == ("back", 40.0, 150.0)


def test_the_patients_lesions_page_shows_the_pins_linking_to_their_timelines(logged_in, clinician):
    calf = Lesion.objects.create(
        patient_ref="PT-7", name="left calf", created_by=clinician, map_view="back", map_x=40, map_y=150
    )
    Lesion.objects.create(patient_ref="PT-7", name="not pinned", created_by=clinician)
    Lesion.objects.create(
        patient_ref="PT-8", name="other patient", created_by=clinician, map_view="front", map_x=50, map_y=55
    )
    page = logged_in.get(reverse("diagnosis:lesions"), {"patient": "PT-7"}).content.decode()
    pins = re.findall(r'<a href="([^"]+)" class="pin-link" aria-label="([^"]+)">', page)
    assert pins == [(reverse("diagnosis:lesion", args=[calf.pk]), "left calf (back)")]
    assert '<circle class="pin" r="4.5" cx="40.0" cy="150.0"/>' in page
    assert "Lower extremity, back of the body" in page  # the list says where, in words


def test_the_admin_keeps_a_pinned_lesions_photos_at_the_pins_site(admin_client, clinician, standin_model):
    lesion = Lesion.objects.create(
        patient_ref="PT-7", name="sternum", created_by=clinician, map_view="front", map_x=50, map_y=55
    )
    prediction = services.submit_upload(
        uploaded_by=clinician, image=check_image(upload_file(redness_png(-40), "m.png", "image/png")), lesion=lesion
    )
    url = reverse("admin:diagnosis_upload_change", args=[prediction.upload_id])
    fields = {
        "patient_ref": "PT-7",
        "note": "corrected",
        "prediction-TOTAL_FORMS": "1",
        "prediction-INITIAL_FORMS": "1",
        "prediction-MIN_NUM_FORMS": "0",
        "prediction-MAX_NUM_FORMS": "0",
        "prediction-0-id": prediction.pk,
        "prediction-0-upload": prediction.upload_id,
    }
    response = admin_client.post(url, {**fields, "body_site": "foot"})
    assert response.status_code == 200 and "but the body site says foot" in response.content.decode()
    assert Upload.objects.get().body_site == "chest"
    assert admin_client.post(url, {**fields, "body_site": ""}).status_code == 302  # blank: the pin's site
    upload = Upload.objects.get()
    assert (upload.body_site, upload.note) == ("chest", "corrected")
