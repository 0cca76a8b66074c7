"""Erasure on request: everything kept about one patient deleted, for good.

A patient may ask for their data to be erased (GDPR art. 17). `erase_patient`
deletes the patient's predictions, uploads, lesions, and the stored photos,
thumbnails and heat maps, in one transaction; the files go once it has committed
(storage.delete_on_commit), so a failed erasure leaves everything as it was.

The audit trail keeps that an erasure happened, by whom and when, with counts but
without the content: the new "erase" event names no patient, and the earlier
events about the erased records keep who did what and when but lose what they
described (the object's name, the patient reference, comments).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from . import audit, storage
from .models import AuditEvent, Lesion, Prediction, Upload


@dataclass(frozen=True)
class Erased:
    predictions: int
    uploads: int
    lesions: int
    files: int
    audit_events_redacted: int


def _file_names(uploads) -> list[str]:
    names = []
    for upload in uploads:
        names += [upload.image.name, upload.thumbnail.name]
        prediction = getattr(upload, "prediction", None)
        if prediction is not None:
            names.append(prediction.heatmap.name)
    return [name for name in names if name]


def _redact_events(uploads, lesions, patient_ref: str = "") -> int:
    """The trail of erased records keeps who, what action and when; not what it named."""
    targets = Q(pk__in=[])
    for model, ids in (
        (Upload, [u.pk for u in uploads]),
        (Prediction, [u.prediction.pk for u in uploads if hasattr(u, "prediction")]),
        (Lesion, [lesion.pk for lesion in lesions]),
    ):
        if ids:
            targets |= Q(content_type=ContentType.objects.get_for_model(model), object_id__in=ids)
    if patient_ref:
        targets |= Q(details__patient_ref=patient_ref)
    events = AuditEvent.objects.filter(targets).exclude(action=AuditEvent.Action.ERASE)
    redacted = 0
    for event in events.select_related("content_type"):
        model = event.content_type.model_class().__name__ if event.content_type_id else "record"
        event.object_repr = f"{model} {event.object_id} (erased)" if event.object_id else "(erased)"
        event.details = {"erased": True}
        event.save(update_fields=["object_repr", "details"])
        redacted += 1
    return redacted


def delete_uploads(uploads, *, lesions=(), patient_ref: str = "") -> Erased:
    """Delete these uploads (with their predictions) and lesions; their files after the commit."""
    uploads, lesions = list(uploads), list(lesions)
    names = _file_names(uploads)
    with transaction.atomic():
        redacted = _redact_events(uploads, lesions, patient_ref)
        predictions, _ = Prediction.objects.filter(upload__in=[u.pk for u in uploads]).delete()
        upload_count, _ = Upload.objects.filter(pk__in=[u.pk for u in uploads]).delete()
        lesion_count, _ = Lesion.objects.filter(pk__in=[lesion.pk for lesion in lesions]).delete()
        storage.delete_on_commit(names)
    return Erased(predictions, upload_count, lesion_count, len(names), redacted)


def erase_patient(patient_ref: str, *, user=None, via: str = audit.Via.COMMAND) -> Erased:
    """Delete everything about this patient; one "erase" event records it (counts only)."""
    patient_ref = patient_ref.strip()
    if not patient_ref:
        raise ValidationError("Name the patient reference to erase.")
    with transaction.atomic():
        uploads = (
            Upload.objects.filter(Q(patient_ref=patient_ref) | Q(lesion__patient_ref=patient_ref))
            .select_related("prediction")
            .select_for_update(of=("self",))
        )
        lesions = Lesion.objects.filter(patient_ref=patient_ref)
        erased = delete_uploads(uploads, lesions=lesions, patient_ref=patient_ref)
        _record_erasure(erased, user=user, via=via)
    return erased


def _record_erasure(erased: Erased, *, user, via: str) -> None:
    """The audit trail's record of an erasure: who, when and how much, never what."""
    audit.record(
        user,
        audit.Action.ERASE,
        None,
        via=via,
        predictions=erased.predictions,
        uploads=erased.uploads,
        lesions=erased.lesions,
        files=erased.files,
        audit_events_redacted=erased.audit_events_redacted,
    )


def erase_predictions(predictions, *, user=None, via: str = audit.Via.ADMIN) -> list[Erased]:
    """The admin's action: each selected prediction's patient erased whole; a prediction
    without a patient reference has only its own upload erased."""
    results = []
    refs = set()
    for prediction in predictions.select_related("upload"):
        ref = prediction.upload.patient_ref
        if ref:
            refs.add(ref)
        else:
            with transaction.atomic():
                erased = delete_uploads([prediction.upload])
                _record_erasure(erased, user=user, via=via)
            results.append(erased)
    for ref in sorted(refs):
        results.append(erase_patient(ref, user=user, via=via))
    return results
