"""Files through Django's storage API only, and never orphaned: the upload path run
against the local folder and against Django's InMemoryStorage (an object store would
be a settings change), what a failed transaction wrote removed again, check_media,
and erasure on request."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from diagnosis import audit, erasure, media, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Lesion, Prediction, Upload
from diagnosis.tests.helpers import lesion_on_skin_png, redness_png, upload_file

pytestmark = pytest.mark.django_db

API = "/api/predictions/"
BACKENDS = {
    "filesystem": "django.core.files.storage.FileSystemStorage",
    "memory": "django.core.files.storage.InMemoryStorage",
}


@pytest.fixture(autouse=True)
def every_file_counts(settings):
    """check_media looks at every file, however young (the default leaves an hour's grace)."""
    settings.SKINCARE_MEDIA_ORPHAN_MIN_AGE = 0


@pytest.fixture(params=list(BACKENDS))
def storage_backend(request, settings):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": BACKENDS[request.param]}}
    return request.param


def stored() -> list[str]:
    return media.stored_names()


def post(client, headers, difference=40, **fields):
    return client.post(API, {"image": upload_file(redness_png(difference), "m.png", "image/png"), **fields}, **headers)


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command(*args, stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


class TestEveryStorageBackend:
    def test_upload_stores_photo_thumbnail_and_heat_map_and_serves_them(
        self, client, token_headers, standin_model, storage_backend
    ):
        body = post(client, token_headers).json()
        prediction = Prediction.objects.get()
        upload = prediction.upload
        assert type(default_storage._wrapped).__name__ == BACKENDS[storage_backend].rsplit(".", 1)[1]
        assert sorted(stored()) == sorted([upload.image.name, upload.thumbnail.name, prediction.heatmap.name])
        for url in (body["image_url"], body["thumbnail_url"], body["heatmap_url"]):
            response = client.get(url, **token_headers)
            assert response.status_code == 200 and b"".join(response.streaming_content)[:4] in (
                b"\x89PNG",
                b"\xff\xd8\xff\xe0",
            )
        assert media.check().clean

    def test_retry_reads_the_photo_back_from_storage(
        self, client, token_headers, no_model, settings, standin_model_dir, storage_backend
    ):
        from ml.serving import classifier

        post(client, token_headers)
        settings.SKINCARE_MODEL_DIR = standin_model_dir
        classifier.reset()
        prediction = services.retry_prediction(Prediction.objects.get())
        assert prediction.status == "done" and default_storage.exists(prediction.heatmap.name)

    def test_a_failed_transaction_removes_what_it_wrote(self, clinician, standin_model, storage_backend, monkeypatch):
        def failing(*args, **kwargs):
            raise RuntimeError("the database went away")

        monkeypatch.setattr(audit, "record", failing)
        image = check_image(upload_file(redness_png(40), "m.png", "image/png"))
        with pytest.raises(RuntimeError):
            services.submit_upload(uploaded_by=clinician, image=image, patient_ref="PT-1", lesion_name="arm")
        assert stored() == [] and not Upload.objects.exists() and not Lesion.objects.exists()

    def test_a_failed_prediction_update_removes_its_heat_map(
        self, clinician, standin_model, storage_backend, monkeypatch
    ):
        from django.db.models.query import QuerySet

        upload = services.store_upload(
            uploaded_by=clinician, image=check_image(upload_file(lesion_on_skin_png(), "m.png"))
        )
        before = set(stored())

        def failing(self, **kwargs):
            raise RuntimeError("the database went away")

        monkeypatch.setattr(QuerySet, "update", failing)
        with pytest.raises(RuntimeError):
            services.run_prediction(upload.prediction)
        assert set(stored()) == before  # the heat map drawn for it is gone again

    def test_erasure_leaves_no_file_or_row_of_the_patient(
        self, client, token_headers, standin_model, storage_backend, django_capture_on_commit_callbacks
    ):
        post(client, token_headers, patient_ref="PT-1", lesion_name="left arm")
        post(client, token_headers, patient_ref="PT-1", lesion_name="left arm")
        post(client, token_headers, patient_ref="PT-2")
        kept = Upload.objects.get(patient_ref="PT-2")
        with django_capture_on_commit_callbacks(execute=True):  # the files go once the deletion commits
            erased = erasure.erase_patient("PT-1")
        assert (erased.predictions, erased.uploads, erased.lesions, erased.files) == (2, 2, 1, 6)
        assert list(Upload.objects.all()) == [kept] and not Lesion.objects.exists()
        assert sorted(stored()) == sorted([kept.image.name, kept.thumbnail.name, kept.prediction.heatmap.name])
        assert media.check().clean


class TestCheckMedia:
    def test_nothing_to_report(self, client, token_headers, standin_model):
        post(client, token_headers)
        code, out = run("check_media")
        assert code == 0 and "nothing to report" in out

    def test_orphans_and_missing_files_are_reported_then_fixed(self, client, token_headers, standin_model):
        post(client, token_headers)
        post(client, token_headers)
        first, second = Prediction.objects.order_by("id")
        orphan = default_storage.save("uploads/leftover.png", ContentFile(b"x"))
        default_storage.delete(first.heatmap.name)
        default_storage.delete(second.upload.thumbnail.name)

        code, out = run("check_media")
        assert code == 1
        assert f"orphan: {orphan}" in out
        assert f"missing: Prediction {first.pk}: its heatmap {first.heatmap.name} is missing" in out
        assert f"missing: Upload {second.upload.pk}: its thumbnail" in out

        code, out = run("check_media", "--fix")
        assert code == 0 and "nothing to report" in out
        assert not default_storage.exists(orphan)
        first.refresh_from_db()
        second.upload.refresh_from_db()
        assert not first.heatmap and default_storage.exists(second.upload.thumbnail.name)
        assert Prediction.objects.count() == 2  # nothing stored was lost

    @pytest.mark.django_db(transaction=True)  # as in a real run: the files go when the deletion commits
    def test_a_missing_photo_is_kept_unless_asked(self, client, token_headers, standin_model):
        post(client, token_headers)
        upload = Upload.objects.get()
        default_storage.delete(upload.image.name)
        code, out = run("check_media", "--fix")
        assert code == 1 and f"Upload {upload.pk}: its image" in out and Upload.objects.exists()
        code, out = run("check_media", "--fix", "--delete-missing")
        assert code == 0 and not Upload.objects.exists() and stored() == []
        assert AuditEvent.objects.filter(action="erase").exists()

    def test_young_unreferenced_files_are_left_alone(self, settings):
        settings.SKINCARE_MEDIA_ORPHAN_MIN_AGE = 3600
        name = default_storage.save("uploads/being-written.png", ContentFile(b"x"))
        code, out = run("check_media", "--fix")
        assert code == 0 and "younger than 3600 s left alone" in out and default_storage.exists(name)
        assert media.check(min_age=timedelta(0)).orphans == [name]


class TestErasure:
    def test_command_and_audit_trail(
        self, client, token_headers, standin_model, reviewer, django_capture_on_commit_callbacks
    ):
        post(client, token_headers, patient_ref="PT-7", lesion_name="left arm", note="itchy since May")
        prediction = Prediction.objects.get()
        services.record_review(prediction, reviewer=reviewer, decision="other", comment="PT-7 seen by Dr X")
        with django_capture_on_commit_callbacks(execute=True):
            code, out = run("erase_patient", "PT-7", "--yes")
        assert code == 0 and "Erased patient PT-7: 1 prediction(s), 1 upload(s), 1 lesion(s), 3 file(s)" in out
        assert not Prediction.objects.exists() and stored() == []
        event = AuditEvent.objects.get(action="erase")
        assert event.user is None and event.via == "command" and event.at is not None
        trail = " ".join(f"{e.object_repr} {e.details}" for e in AuditEvent.objects.all())
        for content in ("PT-7", "left arm", "itchy", "Dr X"):
            assert content not in trail
        # who did what and when is kept for the earlier events
        assert AuditEvent.objects.filter(action="review", user=reviewer, details={"erased": True}).exists()

    def test_admin_action_needs_the_reviewer_permission_and_a_confirmation(
        self, client, token_headers, standin_model, reviewer, clinician
    ):
        from django.urls import reverse

        post(client, token_headers, patient_ref="PT-8")
        post(client, token_headers, patient_ref="PT-9")
        target = Prediction.objects.get(upload__patient_ref="PT-8")
        url = reverse("admin:diagnosis_prediction_changelist")
        data = {"action": "erase_patients", "_selected_action": [target.pk]}

        client.force_login(reviewer)
        page = client.post(url, data)
        assert page.status_code == 200 and "PT-8" in page.content.decode() and Prediction.objects.count() == 2
        response = client.post(url, {**data, "confirm": "yes"})
        assert response.status_code == 302
        assert list(Prediction.objects.values_list("upload__patient_ref", flat=True)) == ["PT-9"]
        event = AuditEvent.objects.get(action="erase")
        assert event.user == reviewer and event.via == "admin" and "PT-8" not in str(event.details)

        clinician.is_staff = True
        clinician.save()
        client.force_login(clinician)  # no review permission: not even the admin's list
        assert client.post(url, {**data, "confirm": "yes"}).status_code == 403
        assert Prediction.objects.count() == 1

    def test_a_failed_erasure_keeps_everything(self, client, token_headers, standin_model, monkeypatch):
        post(client, token_headers, patient_ref="PT-3")
        files = stored()

        def failing(*args, **kwargs):
            raise RuntimeError("the database went away")

        monkeypatch.setattr(audit, "record", failing)
        with pytest.raises(RuntimeError):
            erasure.erase_patient("PT-3")
        assert Prediction.objects.count() == 1 and stored() == files
