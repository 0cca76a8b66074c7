"""Issue 32: the referral letter, a PDF per lesion from its page and from the API, read back
with Debian's poppler-utils (pdftotext for the words, pdftoppm for a page image kept under
test-artifacts/test_letter/). Outside CI a missing poppler-utils is a skip; in CI, a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis import services, wording
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Lesion, Prediction, Upload
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "test_letter"


def poppler():
    if not (shutil.which("pdftotext") and shutil.which("pdftoppm")):
        reason = "pdftotext/pdftoppm not found (apt-get install poppler-utils)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason} (CI installs it: see .ci/run)")
        pytest.skip(reason)


def pdf_text(content: bytes, tmp_path) -> str:
    path = tmp_path / "letter.pdf"
    path.write_bytes(content)
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return " ".join(text.split())  # lines wrap where the page does


def photo(user, lesion, difference: int, when: datetime) -> Prediction:
    prediction = services.submit_upload(
        uploaded_by=user,
        image=check_image(upload_file(redness_png(difference, size=(96, 96)), "m.png", "image/png")),
        lesion=lesion,
    )
    Upload.objects.filter(pk=prediction.upload_id).update(created_at=when)
    return Prediction.objects.get(pk=prediction.pk)


@pytest.fixture
def followed(clinician, reviewer, banded_model):
    """A pinned lesion with three photos, taken out of order: low risk, uncertain, needs a doctor (reviewed)."""
    lesion = Lesion.objects.create(
        patient_ref="PT-0042", name="left calf", created_by=clinician, map_view="back", map_x=40, map_y=150
    )
    now = timezone.now().replace(microsecond=0)
    newest = photo(clinician, lesion, 40, now - timedelta(days=3))
    oldest = photo(clinician, lesion, -40, now - timedelta(days=400))
    middle = photo(clinician, lesion, 0, now - timedelta(days=120))
    services.record_review(
        newest, reviewer=reviewer, decision="confirmed", comment="Irregular network; refer within 2 weeks."
    )
    return lesion, [oldest, middle, Prediction.objects.get(pk=newest.pk)]


def test_the_letter_holds_what_a_dermatologist_needs(logged_in, followed, tmp_path):
    poppler()
    lesion, photos = followed
    response = logged_in.get(reverse("diagnosis:letter", args=[lesion.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "letter.pdf").write_bytes(response.content)
    text = pdf_text(response.content, tmp_path)
    assert "Patient reference: PT-0042" in text and "Lesion: left calf" in text
    assert "Body map pin: Lower extremity, back of the body" in text
    # every photo, oldest first, with its date and outcome
    dates = [timezone.localtime(p.upload.created_at).strftime("%Y-%m-%d %H:%M") for p in photos]
    positions = [
        text.index(f"Photo {n}, {date} Outcome: {p.get_outcome_display()}")
        for n, (date, p) in enumerate(zip(dates, photos), start=1)
    ]
    assert positions == sorted(positions)
    assert "Next step: Refer the patient to dermatology." in text
    assert "Confirmed: needs a doctor by reviewer" in text and "Irregular network; refer within 2 weeks." in text
    assert f"Model version: {photos[-1].model_version}" in text
    assert " ".join(wording.DISCLAIMER.split()) in text
    # the latest heat map the result page shows (the newest photo needs a doctor), with its limits
    assert "Where the model looked: photo 3" in text and "Heat map (Grad-CAM)" in text
    assert AuditEvent.objects.filter(action="letter", object_id=lesion.pk, via="page").count() == 1

    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "60",
            "-f",
            "1",
            "-l",
            "1",
            str(ARTIFACTS / "letter.pdf"),
            str(ARTIFACTS / "letter-page"),
        ],
        check=True,
    )
    pages = sorted(ARTIFACTS.glob("letter-page*.png"))
    assert pages and pages[0].stat().st_size > 5000, pages


def test_no_heat_map_in_the_letter_where_the_page_shows_none(logged_in, clinician, banded_model, tmp_path):
    poppler()
    lesion = Lesion.objects.create(patient_ref="PT-9", name="nape", created_by=clinician)
    photo(clinician, lesion, -40, timezone.now())  # low risk: its heat map is never shown
    text = pdf_text(logged_in.get(reverse("diagnosis:letter", args=[lesion.pk])).content, tmp_path)
    assert "Where the model looked" not in text and "Body map pin: not marked" in text
    assert "Routine: photograph it again" in text


def test_the_api_serves_the_same_letter_by_token_and_refuses_strangers(client, token_headers, followed, tmp_path):
    poppler()
    lesion, _ = followed
    url = f"/api/lesions/{lesion.pk}/letter.pdf"
    response = client.get(url, **token_headers)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert "PT-0042" in pdf_text(response.content, tmp_path)
    assert AuditEvent.objects.filter(action="letter", via="api").count() == 1
    assert client.get(url).status_code in (401, 403)
    assert client.get("/api/lesions/999999/letter.pdf", **token_headers).status_code == 404
