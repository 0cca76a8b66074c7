"""The FHIR export: GET /api/predictions/<id>/fhir/ is a Bundle that fhir.resources
parses back, whose every reference points at an entry of the same bundle, for an
assessed, a not-assessed, a refused, a reviewed and a finally diagnosed prediction."""

from __future__ import annotations

import datetime
import json

import pytest
from fhir.resources.R4B.bundle import Bundle

from diagnosis import final_diagnoses, services
from diagnosis.images import check_image
from diagnosis.models import AuditEvent, Prediction
from diagnosis.tests.helpers import lesion_on_skin_png, redness_png, upload_file

pytestmark = pytest.mark.django_db


def fhir_url(pk: int) -> str:
    return f"/api/predictions/{pk}/fhir/"


def submit(clinician, content: bytes, *, run: bool = True, **fields) -> Prediction:
    image = check_image(upload_file(content, "m.png", "image/png"))
    if not run:
        return services.store_upload(uploaded_by=clinician, image=image, **fields).prediction
    return services.submit_upload(uploaded_by=clinician, image=image, **fields)


def references(node) -> list[str]:
    """Every Reference.reference anywhere in the JSON."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(references(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(references(value))
    return found


def exported(client, headers, pk: int) -> tuple[dict, dict]:
    """The bundle as JSON, parsed back with fhir.resources, references checked; and its resources by type."""
    response = client.get(fhir_url(pk), **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/fhir+json"
    body = json.loads(response.content)
    bundle = Bundle.model_validate_json(response.content)  # raises on anything not valid FHIR
    assert bundle.type == "collection" and bundle.id == f"skincare-prediction-{pk}"
    full_urls = [entry.fullUrl for entry in bundle.entry]
    assert len(full_urls) == len(set(full_urls))
    dangling = [ref for ref in references(body) if ref not in full_urls]
    assert not dangling, f"references outside the bundle: {dangling}"
    by_type: dict[str, list[dict]] = {}
    for entry in body["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return body, by_type


def test_an_assessed_prediction(client, token_headers, clinician, banded_model):
    prediction = submit(clinician, redness_png(40), patient_ref="P-042", body_site="back")
    body, resources = exported(client, token_headers, prediction.pk)

    assert sorted(resources) == ["Device", "DiagnosticReport", "Media", "Observation", "Patient"]
    (patient,) = resources["Patient"]
    # The pseudonymous reference only: no name, no birth date, nothing else.
    assert set(patient) == {"resourceType", "id", "identifier"}
    assert patient["identifier"] == [{"system": "urn:skincare:patient-ref", "value": "P-042"}]

    (observation,) = resources["Observation"]
    assert observation["valueQuantity"]["value"] == pytest.approx(prediction.probability_malignant)
    assert observation["interpretation"][0]["coding"][0]["code"] == "H"
    highs = [r["high"]["value"] for r in observation["referenceRange"]]
    assert highs == [0.4, 0.6]  # low risk below 0.4; uncertain from 0.4 to the threshold 0.6
    (device,) = resources["Device"]
    assert device["version"] == [{"value": prediction.model_version}]
    assert observation["device"]["reference"].endswith(device["id"])

    (report,) = resources["DiagnosticReport"]
    assert report["status"] == "final" and report["conclusion"] == prediction.message
    assert report["conclusionCode"][0]["coding"][0]["code"] == "needs_doctor"
    assert len(report["result"]) == 1
    media = {m["content"]["title"].split(" ")[0]: m for m in resources["Media"]}
    assert set(media) == {"Dermoscopic", "Heat"}  # the photo and its heat map
    assert media["Dermoscopic"]["content"]["url"].startswith("http://testserver/media/uploads/")
    assert media["Dermoscopic"]["bodySite"] == {"text": "Back"}
    assert (media["Dermoscopic"]["width"], media["Dermoscopic"]["height"]) == (64, 64)
    assert {link["link"]["reference"] for link in report["media"]} == {
        e["fullUrl"] for e in body["entry"] if e["resource"]["resourceType"] == "Media"
    }
    event = AuditEvent.objects.get(action="export")
    assert (event.object_id, event.via) == (prediction.pk, "api")


def test_a_prediction_not_assessed_yet(client, token_headers, clinician):
    prediction = submit(clinician, redness_png(40), run=False, patient_ref="P-7")
    assert prediction.status == "pending"
    _, resources = exported(client, token_headers, prediction.pk)
    assert sorted(resources) == ["DiagnosticReport", "Media", "Patient"]  # no probability, no model
    (report,) = resources["DiagnosticReport"]
    assert report["status"] == "registered" and "result" not in report
    assert report["conclusionCode"][0]["coding"][0]["code"] == "not_assessed"
    assert "Not assessed yet" in report["conclusion"]


def test_a_photo_the_image_check_refused(client, token_headers, clinician, gated_model):
    prediction = submit(clinician, redness_png(40))  # uniform: the stand-in's image check refuses it
    assert prediction.status == "refused"
    _, resources = exported(client, token_headers, prediction.pk)
    (report,) = resources["DiagnosticReport"]
    assert report["status"] == "final" and report["conclusion"].startswith("Not assessed:")
    assert "Observation" not in resources and "Patient" not in resources and "subject" not in report


def test_a_reviewed_prediction_with_a_final_diagnosis(client, token_headers, clinician, reviewer, gated_model):
    prediction = submit(clinician, lesion_on_skin_png(), patient_ref="P-9", lesion_name="left calf")
    assert prediction.status == "done"
    services.record_review(prediction, reviewer=reviewer, decision="confirmed", comment="excise")
    final_diagnoses.record_final_diagnosis(
        prediction.upload.lesion,
        recorded_by=reviewer,
        diagnosis="melanoma_in_situ",
        method="histopathology",
        diagnosed_on=datetime.date(2026, 1, 20),
        comment="clear margins",
    )
    _, resources = exported(client, token_headers, prediction.pk)

    (report,) = resources["DiagnosticReport"]
    assert report["status"] == "appended" and len(report["result"]) == 2
    review = next(o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "triage-review")
    assert review["valueCodeableConcept"]["coding"][0]["code"] == "confirmed" and review["note"] == [{"text": "excise"}]
    (condition,) = resources["Condition"]
    assert condition["code"]["coding"][0]["code"] == "melanoma_in_situ"
    assert condition["category"][0]["coding"][0]["code"] == "malignant"
    assert condition["note"][0]["text"] == "Established by histopathology on 2026-01-20. clear margins"
    assert condition["subject"]["reference"] == report["subject"]["reference"]


def test_exporting_twice_names_the_resources_the_same(client, token_headers, clinician, banded_model):
    prediction = submit(clinician, redness_png(-40), patient_ref="P-1")
    first = [e["fullUrl"] for e in exported(client, token_headers, prediction.pk)[0]["entry"]]
    second = [e["fullUrl"] for e in exported(client, token_headers, prediction.pk)[0]["entry"]]
    assert first == second


def test_only_a_signed_in_user_and_only_a_real_prediction(client, token_headers):
    assert client.get(fhir_url(1)).status_code == 401
    assert client.get(fhir_url(999), **token_headers).status_code == 404


def test_the_validation_has_teeth():
    # The same validation prediction_bundle runs: an Observation without its required status is refused.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="status"):
        Bundle.model_validate(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"fullUrl": "urn:uuid:0", "resource": {"resourceType": "Observation", "code": {"text": "x"}}}
                ],
            }
        )
