"""A lesion followed over time: uploads added to a patient's lesion (page and API),
its photos side by side in date order, the evolution warning, history filters."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import Lesion, Prediction, Upload
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

UPLOAD = reverse("diagnosis:upload")
API = "/api/predictions/"


def post_upload(client, difference=-40, **fields):
    return client.post(UPLOAD, {"image": upload_file(redness_png(difference), "m.png", "image/png"), **fields})


def visit(user, lesion, difference: int, days_ago: int) -> Prediction:
    """A photo of `lesion` taken `days_ago` days ago, as probable as `difference` makes it."""
    prediction = services.submit_upload(
        uploaded_by=user, image=check_image(upload_file(redness_png(difference), "m.png", "image/png")), lesion=lesion
    )
    Upload.objects.filter(pk=prediction.upload_id).update(created_at=timezone.now() - timedelta(days=days_ago))
    return Prediction.objects.get(pk=prediction.pk)


@pytest.fixture
def shoulder(clinician):
    return Lesion.objects.create(patient_ref="PT-0042", name="left shoulder, upper", created_by=clinician)


class TestAddingPhotosToALesion:
    def test_name_a_new_lesion_then_add_to_it(self, logged_in, standin_model, clinician):
        post_upload(logged_in, patient_ref="PT-0042", lesion_name="  left shoulder,   upper ")
        lesion = Lesion.objects.get()
        assert (lesion.patient_ref, lesion.name, lesion.created_by) == ("PT-0042", "left shoulder, upper", clinician)

        # The upload page, opened from the lesion, offers it chosen.
        page = logged_in.get(UPLOAD, {"lesion": lesion.pk}).content.decode()
        assert f'<option value="{lesion.pk}" selected>left shoulder, upper</option>' in page
        assert 'value="PT-0042"' in page

        post_upload(logged_in, lesion=lesion.pk)  # the patient reference comes from the lesion
        post_upload(logged_in, patient_ref="PT-0042", lesion_name="Left Shoulder, Upper")  # same name: same lesion
        assert Lesion.objects.count() == 1
        assert set(Upload.objects.values_list("lesion", "patient_ref")) == {(lesion.pk, "PT-0042")}

    def test_a_lesion_needs_a_patient_reference(self, logged_in, standin_model):
        response = post_upload(logged_in, lesion_name="back, left")
        assert "belongs to a patient: give the patient reference" in response.content.decode()
        assert not Upload.objects.exists() and not Lesion.objects.exists()

    def test_a_lesion_of_another_patient_is_refused(self, logged_in, standin_model, shoulder):
        response = post_upload(logged_in, patient_ref="PT-0007", lesion=shoulder.pk)
        assert "belongs to patient PT-0042, not PT-0007" in response.content.decode()
        assert not Upload.objects.exists()

    def test_choose_or_name_not_both(self, logged_in, standin_model, shoulder):
        response = post_upload(logged_in, patient_ref="PT-0042", lesion=shoulder.pk, lesion_name="right knee")
        assert "Choose an existing lesion or name a new one, not both." in response.content.decode()

    def test_the_list_offers_the_patients_lesions(self, logged_in, shoulder, clinician):
        Lesion.objects.create(patient_ref="PT-0099", name="nape of the neck", created_by=clinician)
        page = logged_in.get(UPLOAD, {"patient_ref": "PT-0042"}).content.decode()
        assert "left shoulder, upper" in page and "nape of the neck" not in page
        everyone = logged_in.get(UPLOAD).content.decode()
        assert '<optgroup label="PT-0042">' in everyone and '<optgroup label="PT-0099">' in everyone

    def test_api_lesion_by_id_or_by_name(self, client, token_headers, standin_model, shoulder):
        def post(**fields):
            return client.post(
                API, {"image": upload_file(redness_png(-40), "m.png", "image/png"), **fields}, **token_headers
            )

        by_id = post(lesion=shoulder.pk)
        assert by_id.status_code == 201
        assert by_id.json()["lesion"] == {
            "id": shoulder.pk,
            "name": "left shoulder, upper",
            "patient_ref": "PT-0042",
            "pin": None,
            "letter_url": f"http://testserver/api/lesions/{shoulder.pk}/letter.pdf",
        }
        assert by_id.json()["patient_ref"] == "PT-0042"

        by_name = post(patient_ref="PT-0042", lesion_name="right calf").json()
        calf = Lesion.objects.get(name="right calf")
        assert by_name["lesion"]["id"] == calf.pk

        refused = post(lesion_name="right calf")
        assert refused.status_code == 400 and "give the patient reference" in refused.json()["patient_ref"][0]
        missing = post(lesion=999999)
        assert missing.status_code == 400 and missing.json()["lesion"][0].startswith("There is no such lesion.")

        listed = client.get(API, {"lesion": shoulder.pk}, **token_headers).json()
        assert [item["id"] for item in listed["results"]] == [by_id.json()["id"]]


class TestLesionPage:
    def test_photos_side_by_side_oldest_first_with_probability_outcome_and_heatmap(
        self, logged_in, banded_model, shoulder, clinician
    ):
        first = visit(clinician, shoulder, -90, days_ago=200)  # 0.056, low risk
        second = visit(clinician, shoulder, -40, days_ago=100)  # 0.222, low risk
        response = logged_in.get(reverse("diagnosis:lesion", args=[shoulder.pk]))
        assert response.status_code == 200
        page = response.content.decode()
        assert [int(pk) for pk in re.findall(r'alt="Photo (\d+), visit', page)] == [first.pk, second.pk]
        for prediction in (first, second):
            assert f"{prediction.probability_malignant:.3f}" in page
            assert prediction.upload.image.url in page
            # low risk: the heat map is never offered as if it meant something (issue 32)
            assert prediction.heatmap and prediction.heatmap.url not in page
        assert page.count("Low risk") >= 2
        assert "PT-0042" in page and "left shoulder, upper" in page

    def test_a_marked_rise_since_the_last_visit_is_said_plainly(self, logged_in, banded_model, shoulder, clinician):
        visit(clinician, shoulder, -90, days_ago=200)  # 0.056
        visit(clinician, shoulder, -40, days_ago=100)  # 0.222: +0.166, still low risk, a marked rise
        page = logged_in.get(reverse("diagnosis:lesion", args=[shoulder.pk])).content.decode()
        assert "Changed markedly since the last visit." in page
        assert "went from 0.056" in page and "to 0.222" in page and "+0.166" in page
        assert "evolution, the E of the ABCDE rule" in page
        # The rule is shown in words (the setting's value), not by the setting's name.
        assert "a rise of the probability of malignancy by 0.15 or more" in page
        assert "SKINCARE_EVOLUTION_MIN_RISE" not in page

    def test_crossing_into_a_higher_outcome_is_a_marked_change(
        self, logged_in, banded_model, shoulder, clinician, settings
    ):
        visit(clinician, shoulder, -16, days_ago=60)  # 0.377, low risk
        visit(clinician, shoulder, -10, days_ago=1)  # 0.422, uncertain: +0.045 only
        url = reverse("diagnosis:lesion", args=[shoulder.pk])
        page = logged_in.get(url).content.decode()
        assert "Changed markedly since the last visit." in page and "into a higher outcome" in page
        settings.SKINCARE_EVOLUTION_HIGHER_OUTCOME = False
        page = logged_in.get(url).content.decode()
        assert "Changed markedly" not in page and "or a move into a higher outcome" not in page

    def test_a_stable_lesion_gets_no_warning_and_the_rule_follows_the_setting(
        self, logged_in, banded_model, shoulder, clinician, settings
    ):
        visit(clinician, shoulder, -90, days_ago=200)
        visit(clinician, shoulder, -40, days_ago=100)  # +0.166
        visit(clinician, shoulder, -40, days_ago=1)  # +0.000 since the last visit
        url = reverse("diagnosis:lesion", args=[shoulder.pk])
        page = logged_in.get(url).content.decode()
        assert "Changed markedly" not in page
        assert page.count(">marked change<") == 1  # the earlier rise is still marked on its photo

        Prediction.objects.filter(upload__created_at__gt=timezone.now() - timedelta(days=2)).delete()
        settings.SKINCARE_EVOLUTION_MIN_RISE = 0.5
        page = logged_in.get(url).content.decode()
        assert "Changed markedly" not in page and "by 0.50 or more" in page

    def test_photos_the_model_did_not_assess_are_shown_and_skipped(
        self, logged_in, banded_model, shoulder, clinician, settings, tmp_path
    ):
        from ml.serving import classifier

        visit(clinician, shoulder, -90, days_ago=200)
        settings.SKINCARE_MODEL_DIR = tmp_path / "none"
        classifier.reset()
        visit(clinician, shoulder, 40, days_ago=100)  # no model: not assessed
        settings.SKINCARE_MODEL_DIR = banded_model
        classifier.reset()
        visit(clinician, shoulder, -40, days_ago=1)  # compared with the first: +0.166
        page = logged_in.get(reverse("diagnosis:lesion", args=[shoulder.pk])).content.decode()
        assert "Not assessed" in page and "Changed markedly since the last visit." in page and "+0.166" in page

    def test_lesion_list_by_patient(self, logged_in, standin_model, shoulder, clinician):
        Lesion.objects.create(patient_ref="PT-0099", name="nape of the neck", created_by=clinician)
        visit(clinician, shoulder, -40, days_ago=3)
        page = logged_in.get(reverse("diagnosis:lesions"), {"patient": "PT-0042"}).content.decode()
        assert "left shoulder, upper" in page and "nape of the neck" not in page
        assert reverse("diagnosis:lesion", args=[shoulder.pk]) in page

    def test_lesion_pages_need_a_login(self, client, shoulder):
        for url in (reverse("diagnosis:lesion", args=[shoulder.pk]), reverse("diagnosis:lesions")):
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


class TestHistoryFilters:
    @pytest.fixture
    def photos(self, standin_model, clinician, shoulder):
        knee = Lesion.objects.create(patient_ref="PT-0042", name="right knee", created_by=clinician)

        def submit(patient_ref="", lesion=None):
            return services.submit_upload(
                uploaded_by=clinician,
                image=check_image(upload_file(redness_png(-40), "m.png", "image/png")),
                patient_ref=patient_ref,
                lesion=lesion,
            )

        return {
            "shoulder": submit(lesion=shoulder),
            "knee": submit(lesion=knee),
            "no_lesion": submit("PT-0042"),
            "other_patient": submit("PT-00421"),
        }

    @staticmethod
    def shown(client, **params) -> set[int]:
        page = client.get(reverse("diagnosis:history"), params).content.decode()
        return {int(pk) for pk in re.findall(r'href="/predictions/(\d+)/"><img', page)}

    def test_by_lesion(self, logged_in, photos, shoulder):
        assert self.shown(logged_in, lesion=shoulder.pk) == {photos["shoulder"].pk}

    def test_by_patient_reference_exactly(self, logged_in, photos):
        assert self.shown(logged_in, patient="PT-0042") == {photos[k].pk for k in ("shoulder", "knee", "no_lesion")}
        assert self.shown(logged_in, q="PT-0042") == {p.pk for p in photos.values()}  # the search: part of it

    def test_by_patient_and_lesion(self, logged_in, photos, shoulder):
        assert self.shown(logged_in, patient="PT-0042", lesion=shoulder.pk) == {photos["shoulder"].pk}
        assert self.shown(logged_in, patient="PT-00421", lesion=shoulder.pk) == set()

    def test_history_links_to_the_lesion(self, logged_in, photos, shoulder):
        page = logged_in.get(reverse("diagnosis:history")).content.decode()
        assert reverse("diagnosis:lesion", args=[shoulder.pk]) in page
