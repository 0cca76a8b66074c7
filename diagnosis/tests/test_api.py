"""JSON API: POST /api/predictions/, GET list and detail, auth, and errors as JSON."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.pagination import PageNumberPagination

from diagnosis.models import Prediction
from diagnosis.tests.helpers import BLUE, RED, image_bytes, noise_bytes, upload_file
from ml.serving import classifier

pytestmark = pytest.mark.django_db

LIST_URL = "/api/predictions/"


def post_image(client, content: bytes, name="mole.jpg", headers=None, **fields):
    return client.post(LIST_URL, {"image": upload_file(content, name), **fields}, **(headers or {}))


def test_urls_are_where_the_issue_says():
    assert reverse("prediction-list") == LIST_URL
    assert reverse("prediction-detail", args=[7]) == "/api/predictions/7/"


def test_post_with_token_returns_201_and_the_prediction(client, token_headers, standin_model, clinician):
    response = post_image(
        client, image_bytes(color=RED), headers=token_headers, patient_ref="PT-1", body_site="face", note="new"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    prediction = Prediction.objects.get()
    assert body["id"] == prediction.pk
    assert body["status"] == "done" and body["label"] == "malignant"
    assert body["outcome"] == "needs_doctor" and body["verdict"] == "Needs a doctor"
    assert 0.5 <= body["probability_malignant"] <= 1 and body["threshold"] == 0.5
    assert body["model_version"] == "standin-test" and body["elapsed_ms"] > 0
    assert body["created_at"] and body["message"].startswith("Needs a doctor")
    assert body["image_url"] == f"http://testserver{prediction.upload.image.url}"
    assert (body["patient_ref"], body["body_site"], body["note"], body["uploaded_by"]) == (
        "PT-1",
        "face",
        "new",
        "clinician",
    )
    assert body["review"] == {
        "reviewed": False,
        "decision": None,
        "comment": "",
        "reviewed_by": None,
        "reviewed_at": None,
    }


def test_benign_label(client, token_headers, standin_model):
    body = post_image(client, image_bytes(color=BLUE), headers=token_headers).json()
    assert (
        body["label"] == "benign"
        and body["probability_malignant"] < 0.5
        and body["verdict"] == "Low risk"
        and body["outcome"] == "low_risk"
    )


def test_post_with_session_works_too(logged_in, standin_model):
    assert post_image(logged_in, image_bytes()).status_code == 201


def test_no_model_still_stores_and_answers_201_with_a_null_label(client, token_headers, no_model):
    response = post_image(client, image_bytes(), headers=token_headers)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "no_model" and body["label"] is None and body["probability_malignant"] is None
    assert body["outcome"] == "not_assessed" and "no model available" in body["message"]
    assert Prediction.objects.filter(pk=body["id"]).exists()


def test_image_url_answers_the_token_with_the_image(client, token_headers, standin_model):
    body = post_image(client, image_bytes(), headers=token_headers).json()
    response = client.get(body["image_url"], **token_headers)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_image_url_refuses_anonymous_and_bad_tokens(client, token_headers, standin_model):
    body = post_image(client, image_bytes(), headers=token_headers).json()
    for headers in ({}, {"HTTP_AUTHORIZATION": "Token not-a-real-token"}):
        response = client.get(body["image_url"], **headers)
        assert response.status_code in (401, 403)
        assert "Location" not in response  # refused, not redirected to a login page


def test_list_is_paginated_newest_first(client, token_headers, standin_model, monkeypatch):
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    ids = [post_image(client, image_bytes(), headers=token_headers).json()["id"] for _ in range(3)]
    first = client.get(LIST_URL, **token_headers).json()
    assert first["count"] == 3 and first["previous"] is None
    assert [item["id"] for item in first["results"]] == ids[:0:-1]
    second = client.get(first["next"], **token_headers).json()
    assert [item["id"] for item in second["results"]] == ids[:1] and second["next"] is None


@pytest.mark.parametrize("query, field", [("outcome=bogus", "outcome"), ("lesion=left-arm", "lesion")])
def test_unknown_list_filter_is_a_400_not_everything(client, token_headers, standin_model, query, field):
    post_image(client, image_bytes(), headers=token_headers)
    response = client.get(f"{LIST_URL}?{query}", **token_headers)
    assert response.status_code == 400 and field in response.json()
    assert client.get(f"{LIST_URL}?outcome=low_risk", **token_headers).status_code == 200


def test_detail(client, token_headers, standin_model):
    created = post_image(client, image_bytes(), headers=token_headers).json()
    response = client.get(f"{LIST_URL}{created['id']}/", **token_headers)
    assert response.status_code == 200 and response.json() == created
    missing = client.get(f"{LIST_URL}999999/", **token_headers)
    assert missing.status_code == 404 and "detail" in missing.json()


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_calls_are_refused(client, method):
    response = getattr(client, method)(LIST_URL)
    assert response.status_code in (401, 403)
    assert "detail" in response.json()
    assert client.get(f"{LIST_URL}1/").status_code in (401, 403)


def test_anonymous_does_not_reach_the_model(client, standin_model):
    post_image(client, image_bytes())
    assert not Prediction.objects.exists() and not classifier.is_loaded()


@pytest.mark.parametrize(
    "content, name, expected",
    [
        (b"just some text", "mole.jpg", "This file is not an image that can be read."),
        (noise_bytes("JPEG", (256, 256), quality=95)[:2048], "cut.jpg", "The image file is damaged or incomplete"),
        (image_bytes("GIF"), "anim.gif", "GIF images are not accepted."),
        (image_bytes("TIFF"), "scan.tiff", "TIFF images are not accepted."),
    ],
)
def test_bad_images_get_400_json_saying_what_is_wrong(client, token_headers, standin_model, content, name, expected):
    response = post_image(client, content, name, headers=token_headers)
    assert response.status_code == 400
    assert response.json()["image"][0].startswith(expected)
    assert not Prediction.objects.exists()


def test_twelve_megabyte_upload_gets_json_not_a_500(client, token_headers, standin_model):
    response = post_image(client, noise_bytes("PNG", (2048, 2048)), "big.png", headers=token_headers)
    assert response.status_code == 400
    assert response.json()["image"][0].startswith("The file is 12.0 MB; the limit is 10.0 MB.")


def test_missing_image_and_bad_fields(client, token_headers, standin_model):
    response = client.post(LIST_URL, {"body_site": "moon", "patient_ref": "Jane Doe"}, **token_headers)
    assert response.status_code == 400
    errors = response.json()
    assert errors["image"] == ["Choose a photo to upload."]
    assert "not one of the available choices" in errors["body_site"][0]
    assert "never the patient's name" in errors["patient_ref"][0]


def test_json_body_is_refused_with_json(client, token_headers):
    response = client.post(LIST_URL, {"image": "aGVsbG8="}, content_type="application/json", **token_headers)
    assert response.status_code == 415 and "detail" in response.json()


def test_oversized_non_file_body_gets_json_413(client, token_headers, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(
        LIST_URL,
        "note=" + "x" * 5000,
        content_type="application/x-www-form-urlencoded",
        **token_headers,
    )
    assert response.status_code == 413 and "too large" in response.json()["detail"]
