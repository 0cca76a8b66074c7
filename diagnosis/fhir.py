"""One prediction as a FHIR Bundle, for hospital systems.

Built and validated with the maintained `fhir.resources` package. Its R4B models
(FHIR 4.3.0, the `fhir.resources.R4B` subpackage of fhir.resources 7 and 8) are used:
fhir.resources 7+ has no plain R4 (4.0.1) subpackage, and R4B changed none of the
elements used here (Bundle, Patient, Device, Media, Observation, DiagnosticReport,
Condition), so the JSON reads as R4 too.

The bundle (type "collection"; every entry named by a urn:uuid, and every reference
points at an entry of the same bundle):

- Patient: the pseudonymous patient reference as an identifier, nothing else (no
  patient, no Patient, when the upload has no reference);
- Device: the model, its version as the device version;
- Media: the stored photo (a URL of the login-checked media view, never the bytes),
  and the heat map when there is one;
- Observation: the probability of malignancy, with the threshold (and the uncertain
  band) as reference ranges, the model as `device`, the photo as `derivedFrom`;
  absent when the model did not assess the photo;
- Observation: the reviewer's triage decision, when there is one;
- DiagnosticReport: status, code, the conclusion in words, the outcome as a coded
  conclusion, its results and media;
- Condition: the lesion's final diagnosis, when one is recorded.

The codes are this tool's own (CODE_SYSTEM + ":outcome", ...): it does not claim SNOMED
CT or LOINC codes it has not been mapped to; a hospital maps them at its interface.
"""

from __future__ import annotations

import uuid

from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle

from .models import FinalDiagnosis, Prediction

FHIR_VERSION = "4.3.0 (R4B, read as R4)"
CODE_SYSTEM = "urn:skincare"
PATIENT_SYSTEM = f"{CODE_SYSTEM}:patient-ref"
# Fixed, so that exporting a prediction twice names its resources the same.
NAMESPACE = uuid.UUID("6f6e9a56-2b7c-4f0e-9a41-3f1c2d0b7a11")
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETATIONS = {
    Prediction.Outcome.NEEDS_DOCTOR: ("H", "High"),
    Prediction.Outcome.UNCERTAIN: ("IND", "Indeterminate"),
    Prediction.Outcome.LOW_RISK: ("N", "Normal"),
}
REPORT_STATUS = {
    Prediction.Status.DONE: "final",
    Prediction.Status.REFUSED: "final",  # the model's final answer: it does not assess this photo
    Prediction.Status.PENDING: "registered",  # not assessed yet: a retry can still give a result
    Prediction.Status.NO_MODEL: "registered",
    Prediction.Status.FAILED: "registered",
}


def _urn(*parts) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, '/'.join(str(part) for part in parts))}"


def _ref(urn: str) -> dict:
    return {"reference": urn}


def _coding(kind: str, code: str, display: str) -> dict:
    return {"coding": [{"system": f"{CODE_SYSTEM}:{kind}", "code": code, "display": display}], "text": display}


def _media(content: dict, **fields) -> dict:
    """A FHIR Media resource of an image (the photo, or its heat map)."""
    image = {"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image", "display": "Image"}
    return {"resourceType": "Media", "status": "completed", "type": {"coding": [image]}, **fields, "content": content}


def _when(moment) -> str | None:
    return timezone.localtime(moment).isoformat() if moment else None


def _absolute(url: str, request) -> str:
    return request.build_absolute_uri(url) if request is not None else url


def prediction_bundle(prediction: Prediction, *, request=None) -> Bundle:
    """The validated Bundle for one prediction (fhir.resources refuses a malformed one)."""
    upload = prediction.upload
    entries: list[tuple[str, dict]] = []

    def add(urn: str, resource: dict) -> str:
        entries.append((urn, resource))
        return urn

    subject = None
    if upload.patient_ref:
        subject = _ref(
            add(
                _urn("patient", upload.patient_ref),
                {
                    "resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": upload.patient_ref}],
                },
            )
        )

    def about_patient(resource: dict) -> dict:
        if subject:
            resource["subject"] = subject
        return resource

    body_site = {"text": upload.get_body_site_display()} if upload.body_site else None
    media_links = []
    photo = add(
        _urn("prediction", prediction.pk, "photo"),
        about_patient(
            _media(
                {
                    "contentType": "image/png" if upload.image.name.endswith(".png") else "image/jpeg",
                    "url": _absolute(upload.image.url, request),
                    "title": "Dermoscopic photo as stored (re-encoded; EXIF and GPS removed)",
                    "creation": _when(upload.created_at),
                },
                createdDateTime=_when(upload.created_at),
                width=upload.width,
                height=upload.height,
                **({"bodySite": body_site} if body_site else {}),
            )
        ),
    )
    media_links.append({"comment": "The photo", "link": _ref(photo)})
    if prediction.heatmap:
        heatmap = add(
            _urn("prediction", prediction.pk, "heatmap"),
            about_patient(
                _media(
                    {
                        "contentType": "image/png",
                        "url": _absolute(prediction.heatmap.url, request),
                        "title": f"{prediction.heatmap_name}: where in the photo the model's answer came from",
                    }
                )
            ),
        )
        media_links.append(
            {
                "comment": f"{prediction.heatmap_name}: where the model looked, not where the lesion is malignant",
                "link": _ref(heatmap),
            }
        )

    results = []
    if prediction.is_assessed:
        device = add(
            _urn("model", prediction.model_version or "unknown"),
            {
                "resourceType": "Device",
                "status": "active",
                "deviceName": [{"name": "skinCare dermoscopic image classifier", "type": "model-name"}],
                "version": [{"value": prediction.model_version or "unknown"}],
            },
        )
        ranges = [
            {
                "high": {
                    "value": prediction.threshold,
                    "unit": "1",
                    "system": "http://unitsofmeasure.org",
                    "code": "1",
                },
                "text": f"Below the threshold {prediction.threshold:.3f}; at or above it: needs a doctor.",
            }
        ]
        if prediction.has_uncertain_band:
            ranges = [
                {
                    "high": {
                        "value": prediction.uncertain_threshold,
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                    "text": f"Low risk: below the uncertain threshold {prediction.uncertain_threshold:.3f}.",
                },
                {
                    "low": {
                        "value": prediction.uncertain_threshold,
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                    "high": {
                        "value": prediction.threshold,
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                    "text": f"Uncertain, have a doctor look: from {prediction.uncertain_threshold:.3f} up to the "
                    f"threshold {prediction.threshold:.3f} (at or above it: needs a doctor).",
                },
            ]
        code, display = INTERPRETATIONS[prediction.outcome]
        probability = add(
            _urn("prediction", prediction.pk, "probability"),
            about_patient(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": _coding(
                        "observation", "probability-malignant", "Probability of malignancy (statistical model)"
                    ),
                    "effectiveDateTime": _when(upload.created_at),
                    "issued": _when(prediction.predicted_at),
                    "valueQuantity": {
                        "value": prediction.probability_malignant,
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                    "interpretation": [
                        {
                            "coding": [{"system": INTERPRETATION_SYSTEM, "code": code, "display": display}],
                            "text": prediction.get_outcome_display(),
                        }
                    ],
                    "referenceRange": ranges,
                    "device": _ref(device),
                    "derivedFrom": [_ref(photo)],
                    **({"bodySite": body_site} if body_site else {}),
                }
            ),
        )
        results.append(_ref(probability))
    if prediction.is_reviewed:
        review = add(
            _urn("prediction", prediction.pk, "review"),
            about_patient(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": _coding("observation", "triage-review", "Reviewer's triage decision"),
                    "effectiveDateTime": _when(prediction.reviewed_at),
                    "valueCodeableConcept": _coding(
                        "review-decision", prediction.review_decision, prediction.get_review_decision_display()
                    ),
                    **({"note": [{"text": prediction.review_comment}]} if prediction.review_comment else {}),
                    **({"derivedFrom": [results[0]]} if results else {}),
                }
            ),
        )
        results.append(_ref(review))

    report = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": f"{CODE_SYSTEM}:prediction", "value": str(prediction.pk)}],
        "status": "appended" if prediction.is_reviewed and prediction.is_assessed else REPORT_STATUS[prediction.status],
        "code": _coding("report", "skin-lesion-triage", "Dermoscopic skin lesion triage (decision support)"),
        "effectiveDateTime": _when(upload.created_at),
        "issued": _when(prediction.predicted_at or prediction.created_at),
        "conclusion": prediction.message,
        "conclusionCode": [_coding("outcome", prediction.outcome, prediction.get_outcome_display())],
        "media": media_links,
    }
    if results:
        report["result"] = results
    add(_urn("prediction", prediction.pk, "report"), about_patient(report))

    lesion, final = upload.lesion, final_diagnosis_of(prediction)
    if final is not None and subject:
        note = f"Established by {final.get_method_display().lower()} on {final.diagnosed_on:%Y-%m-%d}."
        if final.comment:
            note += f" {final.comment}"
        add(
            _urn("lesion", lesion.pk, "final-diagnosis"),
            {
                "resourceType": "Condition",
                "identifier": [{"system": f"{CODE_SYSTEM}:lesion", "value": str(lesion.pk)}],
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                            "display": "Confirmed",
                        }
                    ]
                },
                "category": [
                    _coding(
                        "final-diagnosis-class",
                        "malignant" if final.is_malignant else "benign",
                        "Malignant (the model's target)" if final.is_malignant else "Benign",
                    )
                ],
                "code": _coding("final-diagnosis", final.diagnosis, final.get_diagnosis_display()),
                "bodySite": [{"text": lesion.name}],
                "subject": subject,
                "recordedDate": _when(final.recorded_at),
                "note": [{"text": note}],
            },
        )

    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "id": f"skincare-prediction-{prediction.pk}",
            "type": "collection",
            "timestamp": _when(timezone.now()),
            "entry": [
                {"fullUrl": urn, "resource": {"id": urn.rsplit(":", 1)[1], **resource}} for urn, resource in entries
            ],
        }
    )


def prediction_bundle_json(prediction: Prediction, *, request=None) -> str:
    """The Bundle as FHIR JSON (empty elements left out)."""
    return prediction_bundle(prediction, request=request).model_dump_json()


def final_diagnosis_of(prediction: Prediction) -> FinalDiagnosis | None:
    lesion = prediction.upload.lesion
    return getattr(lesion, "final_diagnosis", None) if lesion is not None else None
