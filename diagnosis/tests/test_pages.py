"""The clinician's pages: login, upload, result, retry, media."""

from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse
from PIL import Image

from diagnosis.models import Prediction, Upload
from diagnosis.tests.helpers import BLUE, RED, image_bytes, jpeg_with_exif, noise_bytes, upload_file
from ml.serving import classifier

pytestmark = pytest.mark.django_db


def post_upload(client, content: bytes, name="mole.jpg", **fields):
    return client.post(reverse("diagnosis:upload"), {"image": upload_file(content, name), **fields})


@pytest.mark.parametrize("url_name", ["diagnosis:upload", "diagnosis:history"])
def test_pages_need_a_login(client, url_name):
    response = client.get(reverse(url_name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_result_page_needs_a_login(client, logged_in, no_model):
    prediction = Prediction.objects.get(pk=post_upload(logged_in, image_bytes()).url.split("/")[-2])
    client.logout()
    response = client.get(reverse("diagnosis:result", args=[prediction.pk]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_login_page_is_open_and_logs_in(client, clinician):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "clinician", "password": "not-used-in-tests-1"})
    assert response.status_code == 302 and response["Location"] == reverse("diagnosis:upload")
    assert client.get(reverse("diagnosis:upload")).status_code == 200


def test_upload_page_says_when_no_model_is_available(logged_in, no_model):
    assert "No model available" in logged_in.get(reverse("diagnosis:upload")).content.decode()


def test_upload_red_mole_needs_a_doctor(logged_in, standin_model, clinician):
    response = post_upload(
        logged_in, image_bytes(color=RED), patient_ref="PT-0001", body_site="back", note="itchy, grew"
    )
    assert response.status_code == 302
    prediction = Prediction.objects.get()
    assert response["Location"] == reverse("diagnosis:result", args=[prediction.pk])
    assert prediction.status == "done" and prediction.label == "malignant" and prediction.outcome == "needs_doctor"
    assert 0.5 <= prediction.probability_malignant <= 1.0
    assert prediction.threshold == 0.5 and prediction.model_version == "standin-test"
    assert prediction.elapsed_ms > 0 and prediction.predicted_at is not None
    upload = prediction.upload
    assert (upload.patient_ref, upload.body_site, upload.note, upload.uploaded_by) == (
        "PT-0001",
        "back",
        "itchy, grew",
        clinician,
    )

    page = logged_in.get(response["Location"]).content.decode()
    assert "Needs a doctor" in page
    assert f"{prediction.probability_malignant:.3f}" in page
    assert "0.500" in page  # the threshold it was compared with
    assert "standin-test" in page
    assert "Decision support, not a diagnosis" in page
    assert upload.image.url in page


def test_upload_blue_mole_is_low_risk(logged_in, standin_model):
    response = post_upload(logged_in, image_bytes(color=BLUE))
    prediction = Prediction.objects.get()
    assert prediction.outcome == "low_risk" and prediction.probability_malignant < 0.5
    assert "Low risk" in logged_in.get(response["Location"]).content.decode()


def test_refused_upload_shows_the_message_and_stores_nothing(logged_in, standin_model, media_root):
    response = post_upload(logged_in, b"not an image at all", "mole.jpg")
    assert response.status_code == 200
    assert "This file is not an image that can be read." in response.content.decode()
    assert not Upload.objects.exists()
    assert not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_twelve_megabyte_upload_gets_the_message_not_a_500(logged_in, standin_model):
    response = post_upload(logged_in, noise_bytes("PNG", (2048, 2048)), "big.png")
    assert response.status_code == 200
    assert "The file is 12.0 MB; the limit is 10.0 MB." in response.content.decode()


def test_large_upload_streamed_to_a_temporary_file_is_accepted(logged_in, standin_model, settings):
    # Above FILE_UPLOAD_MAX_MEMORY_SIZE Django hands the form a temporary file, not memory.
    content = noise_bytes("PNG", (1300, 1300))
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE < len(content) < settings.SKINCARE_MAX_UPLOAD_SIZE
    response = post_upload(logged_in, content, "large.png")
    assert response.status_code == 302
    upload = Upload.objects.get()
    assert (upload.width, upload.height, upload.original_size) == (1300, 1300, len(content))
    assert upload.prediction.status == "done"


def test_upload_limit_shrunk_by_setting_reaches_the_page(logged_in, settings, standin_model):
    settings.SKINCARE_MAX_UPLOAD_SIZE = 100
    response = post_upload(logged_in, image_bytes())
    assert "the limit is 0.1 KB" in response.content.decode()


def test_stored_copy_is_reencoded_under_a_random_name_without_exif(logged_in, standin_model, media_root):
    post_upload(logged_in, jpeg_with_exif(size=(64, 48), orientation=6), "Jane Doe left arm.jpg", patient_ref="PT-7")
    upload = Upload.objects.get()
    assert "Jane" not in upload.image.name and "Doe" not in upload.image.name
    assert upload.image.name.startswith("uploads/") and upload.image.name.endswith(".png")
    stored_path = media_root / upload.image.name
    with Image.open(stored_path) as stored:
        assert stored.format == "PNG"
        assert stored.size == (48, 64)  # orientation applied before EXIF was dropped
        assert dict(stored.getexif()) == {}
        assert "exif" not in stored.info and "icc_profile" not in stored.info
    raw = stored_path.read_bytes()
    assert b"Exif" not in raw and b"CameraMaker" not in raw
    assert (upload.width, upload.height, upload.original_format) == (48, 64, "JPEG")
    with Image.open(media_root / upload.thumbnail.name) as thumb:
        assert thumb.format == "JPEG" and dict(thumb.getexif()) == {}


def test_two_uploads_of_the_same_file_get_different_names(logged_in, standin_model):
    post_upload(logged_in, image_bytes())
    post_upload(logged_in, image_bytes())
    first, second = Upload.objects.all()
    assert first.image.name != second.image.name


def test_model_is_loaded_lazily_on_the_first_prediction(logged_in, standin_model):
    assert not classifier.is_loaded()
    logged_in.get(reverse("diagnosis:upload"))
    logged_in.get(reverse("diagnosis:history"))
    assert not classifier.is_loaded()
    post_upload(logged_in, image_bytes())
    assert classifier.is_loaded()


def test_no_model_keeps_the_upload_shows_it_and_retry_assesses_it(logged_in, no_model, settings, standin_model_dir):
    response = post_upload(logged_in, image_bytes(color=RED), patient_ref="PT-9")
    prediction = Prediction.objects.get()
    assert prediction.status == "no_model" and prediction.outcome == "not_assessed"
    assert prediction.label == "" and prediction.probability_malignant is None
    assert prediction.reason.startswith("No model available")
    page = logged_in.get(response["Location"]).content.decode()
    assert "Not assessed" in page and "no model available" in page
    assert "Retry the prediction" in page

    settings.SKINCARE_MODEL_DIR = standin_model_dir  # the model ships
    classifier.reset()
    response = logged_in.post(reverse("diagnosis:retry", args=[prediction.pk]), follow=True)
    prediction.refresh_from_db()
    assert prediction.status == "done" and prediction.outcome == "needs_doctor" and prediction.attempts == 2
    page = response.content.decode()
    assert f"Assessed: Needs a doctor. Next step: {prediction.next_step}" in page  # no thresholds in the message
    assert "threshold" not in page.split('<ul class="messages">')[1].split("</ul>")[0]


def test_failed_prediction_is_kept_with_the_reason(logged_in, settings, tmp_path, standin_model_dir):
    # A model that loads but cannot score: its metadata asks for the wrong input size.
    mismatched = tmp_path / "mismatched-model"
    shutil.copytree(standin_model_dir, mismatched)
    metadata = json.loads((mismatched / "metadata.json").read_text())
    (mismatched / "metadata.json").write_text(json.dumps({**metadata, "image_size": 100}))
    settings.SKINCARE_MODEL_DIR = mismatched
    classifier.reset()
    try:
        response = post_upload(logged_in, image_bytes())
    finally:
        classifier.reset()
    prediction = Prediction.objects.get()
    assert prediction.status == "failed" and prediction.reason.startswith("ValueError: ")
    assert prediction.outcome == "not_assessed" and prediction.upload.image
    page = logged_in.get(response["Location"]).content.decode()
    assert "the prediction failed" in page and "Retry the prediction" in page


def test_retry_never_rewrites_a_done_prediction(logged_in, standin_model):
    post_upload(logged_in, image_bytes(color=RED))
    prediction = Prediction.objects.get()
    before = (prediction.probability_malignant, prediction.predicted_at, prediction.attempts)
    logged_in.post(reverse("diagnosis:retry", args=[prediction.pk]))
    prediction.refresh_from_db()
    assert (prediction.probability_malignant, prediction.predicted_at, prediction.attempts) == before


class TestMedia:
    def test_image_is_served_to_a_logged_in_user(self, logged_in, standin_model, media_root):
        post_upload(logged_in, image_bytes())
        upload = Upload.objects.get()
        response = logged_in.get(upload.image.url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert b"".join(response.streaming_content) == (media_root / upload.image.name).read_bytes()
        assert logged_in.get(upload.thumbnail.url)["Content-Type"] == "image/jpeg"

    def test_anonymous_gets_no_image(self, client, logged_in, standin_model):
        post_upload(logged_in, image_bytes())
        url = Upload.objects.get().image.url
        client.logout()
        response = client.get(url)
        assert response.status_code in (401, 403)
        assert not getattr(response, "streaming", False)

    def test_files_not_belonging_to_an_upload_are_not_served(self, logged_in, media_root, settings):
        media_root.mkdir(parents=True, exist_ok=True)
        (media_root / "stray.png").write_bytes(image_bytes("PNG"))
        assert logged_in.get(settings.MEDIA_URL + "stray.png").status_code == 404
        assert logged_in.get(settings.MEDIA_URL + "../settings.py").status_code == 404
