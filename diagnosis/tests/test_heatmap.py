"""Grad-CAM heat maps: stored beside the upload, shown on the result page and in the
admin, served only to a signed-in user (session or token), and named in the API."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from diagnosis.models import Prediction
from diagnosis.tests.helpers import RED, image_bytes, lesion_on_skin_png, upload_file

pytestmark = pytest.mark.django_db

GREY = (128, 128, 128)


def post_upload(client, content: bytes, name="mole.png", **fields):
    return client.post(reverse("diagnosis:upload"), {"image": upload_file(content, name, "image/png"), **fields})


def post_api(client, content: bytes, headers):
    return client.post("/api/predictions/", {"image": upload_file(content, "mole.png", "image/png")}, **headers)


def test_every_prediction_stores_a_heatmap_png_under_a_random_name(logged_in, standin_model, media_root):
    post_upload(logged_in, image_bytes("PNG", size=(900, 600), color=RED), "Jane Doe.png")
    post_upload(logged_in, image_bytes("PNG", size=(900, 600), color=RED), "Jane Doe.png")
    first, second = Prediction.objects.order_by("id")
    assert first.heatmap.name != second.heatmap.name
    for prediction in (first, second):
        name = prediction.heatmap.name
        assert name.startswith("uploads/heatmaps/") and name.endswith(".png") and "Jane" not in name
        with Image.open(media_root / name) as stored:
            assert stored.format == "PNG"
            assert stored.size == (640, 427)  # the photo's shape, at most 640 px a side


def test_heat_lands_where_the_image_is_red(logged_in, standin_model, media_root):
    # Grey photo, red square in the top-left: only there does the stand-in see malignancy.
    post_upload(
        logged_in, lesion_on_skin_png(size=(224, 224), patch=(0, 0, 96, 96), background=GREY, lesion=(200, 40, 40))
    )
    prediction = Prediction.objects.get()
    with Image.open(media_root / prediction.heatmap.name) as stored:
        overlay = stored.convert("RGB")
    with Image.open(media_root / prediction.upload.image.name) as photo:
        original = photo.convert("RGB")
    hot_before, hot_after = original.getpixel((40, 40)), overlay.getpixel((40, 40))
    cold_before, cold_after = original.getpixel((190, 190)), overlay.getpixel((190, 190))
    assert max(abs(a - b) for a, b in zip(hot_before, hot_after)) > 10  # coloured by the heat map
    assert max(abs(a - b) for a, b in zip(cold_before, cold_after)) <= 2  # left as it was


def test_a_large_photo_gets_a_heatmap_of_its_shape_with_the_heat_in_place(logged_in, standin_model, media_root):
    # 2600 x 1950: shrunk by a whole factor before the overlay is drawn (services.heatmap_png).
    post_upload(
        logged_in,
        lesion_on_skin_png(size=(2600, 1950), patch=(0, 0, 1040, 1040), background=GREY, lesion=(200, 40, 40)),
    )
    prediction = Prediction.objects.get()
    with Image.open(media_root / prediction.heatmap.name) as stored:
        assert stored.size == (640, 480)
        overlay = stored.convert("RGB")
    hot, cold = overlay.getpixel((100, 100)), overlay.getpixel((600, 440))  # inside the red square, far from it
    assert max(abs(a - b) for a, b in zip(hot, (200, 40, 40))) > 10
    assert max(abs(a - b) for a, b in zip(cold, GREY)) <= 2


def test_result_page_shows_the_heatmap(logged_in, standin_model):
    response = post_upload(logged_in, lesion_on_skin_png())
    prediction = Prediction.objects.get()
    page = logged_in.get(response["Location"]).content.decode()
    assert prediction.heatmap.url in page and "Heat map (Grad-CAM)" in page
    served = logged_in.get(prediction.heatmap.url)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"


def test_api_returns_heatmap_url_answering_token_and_session(
    client, logged_in, token_headers, standin_model, media_root
):
    body = post_api(client, lesion_on_skin_png(), token_headers).json()
    prediction = Prediction.objects.get(pk=body["id"])
    assert body["heatmap_url"] == f"http://testserver{prediction.heatmap.url}"
    by_token = client.get(body["heatmap_url"], **token_headers)
    assert by_token.status_code == 200
    assert b"".join(by_token.streaming_content) == (media_root / prediction.heatmap.name).read_bytes()
    assert logged_in.get(body["heatmap_url"]).status_code == 200  # the session answers too


def test_heatmap_is_refused_to_anonymous_and_bad_tokens(client, token_headers, standin_model):
    url = post_api(client, lesion_on_skin_png(), token_headers).json()["heatmap_url"]
    for headers in ({}, {"HTTP_AUTHORIZATION": "Token not-a-real-token"}):
        response = client.get(url, **headers)
        assert response.status_code in (401, 403)
        assert not getattr(response, "streaming", False) and "Location" not in response


def test_no_heatmap_without_an_assessment(client, token_headers, no_model):
    body = post_api(client, image_bytes("PNG"), token_headers).json()
    assert body["outcome"] == "not_assessed" and body["heatmap_url"] is None
    assert not Prediction.objects.get().heatmap


def test_retry_after_no_model_draws_the_heatmap(logged_in, no_model, settings, standin_model_dir):
    from ml.serving import classifier

    post_upload(logged_in, lesion_on_skin_png())
    prediction = Prediction.objects.get()
    settings.SKINCARE_MODEL_DIR = standin_model_dir
    classifier.reset()
    logged_in.post(reverse("diagnosis:retry", args=[prediction.pk]))
    prediction.refresh_from_db()
    assert prediction.status == "done" and prediction.heatmap.name.startswith("uploads/heatmaps/")


def test_admin_shows_the_heatmap(admin_client, clinician, standin_model):
    from diagnosis import services
    from diagnosis.images import check_image

    prediction = services.submit_upload(
        uploaded_by=clinician, image=check_image(upload_file(lesion_on_skin_png(), "m.png", "image/png"))
    )
    page = admin_client.get(reverse("admin:diagnosis_prediction_change", args=[prediction.pk])).content.decode()
    assert prediction.heatmap.url in page and "heat map (grad-cam)" in page.lower()
    assert admin_client.get(prediction.heatmap.url).status_code == 200


def test_a_heatmap_that_cannot_be_drawn_does_not_lose_the_prediction(logged_in, standin_model, monkeypatch):
    from diagnosis import services

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(services, "heatmap_png", broken)
    post_upload(logged_in, lesion_on_skin_png())
    prediction = Prediction.objects.get()
    assert prediction.status == "done" and prediction.probability_malignant is not None and not prediction.heatmap


def test_heatmap_png_is_a_real_image_of_the_photo_size(standin_model, clinician):
    from diagnosis import services
    from diagnosis.images import check_image

    prediction = services.submit_upload(
        uploaded_by=clinician, image=check_image(upload_file(lesion_on_skin_png(size=(300, 200)), "m.png", "image/png"))
    )
    with prediction.heatmap.open("rb") as stored:
        image = Image.open(io.BytesIO(stored.read()))
        assert image.format == "PNG" and image.size == (300, 200)


def test_an_occlusion_map_lands_where_the_image_is_red_and_says_what_it_is(
    logged_in, client, token_headers, standin_model, media_root, settings
):
    # SKINCARE_HEATMAP=occlusion: each patch covered with the frame's colour (grey) in turn; only covering the
    # red square lowers the stand-in's score, so the heat is there and nowhere else, and the result says how
    # its map was drawn (page, API, admin), while a map drawn before keeps its own name.
    post_upload(logged_in, lesion_on_skin_png(size=(224, 224), patch=(0, 0, 96, 96), background=GREY))
    settings.SKINCARE_HEATMAP = "occlusion"
    response = post_upload(
        logged_in, lesion_on_skin_png(size=(224, 224), patch=(0, 0, 96, 96), background=GREY, lesion=(200, 40, 40))
    )
    before, prediction = Prediction.objects.order_by("id")
    assert (before.heatmap_method, prediction.heatmap_method) == ("gradcam", "occlusion")
    with Image.open(media_root / prediction.heatmap.name) as stored:
        overlay = stored.convert("RGB")
    with Image.open(media_root / prediction.upload.image.name) as photo:
        original = photo.convert("RGB")
    assert max(abs(a - b) for a, b in zip(original.getpixel((40, 40)), overlay.getpixel((40, 40)))) > 10
    assert max(abs(a - b) for a, b in zip(original.getpixel((190, 190)), overlay.getpixel((190, 190)))) <= 2
    page = logged_in.get(response["Location"]).content.decode()
    assert "Heat map (occlusion)" in page and "Heat map (Grad-CAM)" not in page
    assert "Heat map (Grad-CAM)" in logged_in.get(reverse("diagnosis:result", args=[before.pk])).content.decode()
    body = client.get(f"/api/predictions/{prediction.pk}/", **token_headers).json()
    assert body["heatmap_method"] == "occlusion"
    assert client.get(f"/api/predictions/{before.pk}/", **token_headers).json()["heatmap_method"] == "gradcam"
