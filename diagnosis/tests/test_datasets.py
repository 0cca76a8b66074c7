"""Real dermoscopic images from the shared datasets, uploaded through the API and
the page with the stand-in model. Skipped, with the reason, where the datasets
are not beside the repository (see conftest.datasets_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from PIL import Image

from diagnosis.models import Prediction
from diagnosis.tests.helpers import upload_file

pytestmark = pytest.mark.django_db

SAMPLES = [
    # (dataset-relative path, Pillow format of the original)
    ("ham10000/images/ISIC_0024306.jpg", "JPEG"),
    ("ph2/images/IMD002.jpg", "JPEG"),
    ("becode_sample/SET_D/D53.BMP", "BMP"),
]


@pytest.mark.parametrize("relative, fmt", SAMPLES, ids=[Path(p).name for p, _ in SAMPLES])
def test_real_dermoscopic_image_through_the_api(
    client, token_headers, standin_model, datasets_root, media_root, relative, fmt
):
    path = datasets_root / relative
    if not path.is_file():
        pytest.skip(f"{path} is not in this copy of the datasets")
    # The name and content type say nothing true: the bytes decide.
    response = client.post(
        "/api/predictions/",
        {"image": upload_file(path.read_bytes(), "upload.dat", "application/octet-stream")},
        **token_headers,
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "done" and body["label"] in {"benign", "malignant"}
    assert 0.0 <= body["probability_malignant"] <= 1.0

    upload = Prediction.objects.get(pk=body["id"]).upload
    assert upload.original_format == fmt
    with Image.open(path) as original, Image.open(media_root / upload.image.name) as stored:
        assert stored.format == "PNG" and stored.size == original.size
        # Lossless re-encoding: the stored pixels are the decoded original's.
        assert stored.convert("RGB").tobytes() == original.convert("RGB").tobytes()


def test_becode_bmp_through_the_upload_page(logged_in, standin_model, datasets_root):
    path = datasets_root / "becode_sample" / "SET_F" / "F1000.BMP"
    if not path.is_file():
        pytest.skip(f"{path} is not in this copy of the datasets")
    response = logged_in.post(
        reverse("diagnosis:upload"), {"image": upload_file(path.read_bytes(), "F1000.BMP", "image/bmp")}
    )
    assert response.status_code == 302
    page = logged_in.get(response["Location"]).content.decode()
    assert "standin-test" in page and "Decision support, not a diagnosis" in page


def test_ph2_melanoma_through_the_page_shows_a_heatmap(logged_in, standin_model, datasets_root, media_root):
    """A melanoma from PH2 (the first the xlsx labels so, IMD058 in the full set), uploaded
    with the stand-in: the result page shows the photo's Grad-CAM heat map."""
    from ml.data.datasets import read_dataset

    ph2 = datasets_root / "ph2"
    if not ph2.is_dir():
        pytest.skip(f"{ph2} is not in this copy of the datasets")
    melanomas = [s for s in read_dataset(ph2).samples if s.label == 1 and s.detail == "melanoma" and s.path.is_file()]
    if not melanomas:
        pytest.skip(f"no melanoma image found in {ph2}")
    path = melanomas[0].path
    response = logged_in.post(reverse("diagnosis:upload"), {"image": upload_file(path.read_bytes(), path.name)})
    assert response.status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.status == "done" and prediction.heatmap
    page = logged_in.get(response["Location"]).content.decode()
    assert prediction.heatmap.url in page and "Heat map (Grad-CAM)" in page
    with Image.open(path) as original, Image.open(media_root / prediction.heatmap.name) as heat:
        scale = min(1.0, 640 / max(original.size))
        assert heat.format == "PNG" and heat.size == (round(original.width * scale), round(original.height * scale))
    assert logged_in.get(prediction.heatmap.url)["Content-Type"] == "image/png"
