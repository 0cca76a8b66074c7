"""Recording what a lesion turned out to be (its final diagnosis): the service that the
page, the JSON API and the admin all call.

Kept apart from services.py so that the model's answer (run_prediction), the reviewer's
triage decision (record_review) and the final diagnosis each have one writer. A final
diagnosis belongs to the lesion and so to every photo of it; changing one keeps the
earlier version in the audit trail (who, when, what it was, what it became).
"""

from __future__ import annotations

import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import audit, services
from .models import FinalDiagnosis, Lesion, Upload

REVIEW_PERMISSION = "diagnosis.change_prediction"  # the same permission as a triage review (views.py)


def may_record(user) -> bool:
    """Reviewers record final diagnoses and read the performance page: the same permission
    that lets them review a prediction, so an existing reviewer needs nothing new."""
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(REVIEW_PERMISSION))


def check_final_diagnosis(*, diagnosis: str, method: str, diagnosed_on, comment: str = "") -> None:
    """Raise ValidationError, in words for the reviewer, if this final diagnosis cannot be recorded."""
    if diagnosis not in FinalDiagnosis.Diagnosis.values:
        raise ValidationError(
            f"Unknown diagnosis {diagnosis!r}: use one of {', '.join(FinalDiagnosis.Diagnosis.values)}."
        )
    if method not in FinalDiagnosis.Method.values:
        raise ValidationError(
            f"Unknown way of establishing it {method!r}: use one of {', '.join(FinalDiagnosis.Method.values)}."
        )
    if not isinstance(diagnosed_on, datetime.date):
        raise ValidationError("Give the date of the diagnosis (YYYY-MM-DD).")
    if diagnosed_on > timezone.localdate():
        raise ValidationError(f"The date of the diagnosis {diagnosed_on:%Y-%m-%d} is in the future.")
    if diagnosis in FinalDiagnosis.NEEDS_COMMENT and not comment.strip():
        raise ValidationError("Say in the comment what the other diagnosis is.")
    if method == FinalDiagnosis.Method.FOLLOW_UP and diagnosis in FinalDiagnosis.TARGET:
        raise ValidationError(
            "Follow-up without change establishes a benign lesion: a malignant diagnosis is established by "
            "histopathology or a dermatologist's diagnosis."
        )


def _as_details(final: FinalDiagnosis | None) -> dict | None:
    if final is None:
        return None
    return {
        "diagnosis": final.diagnosis,
        "method": final.method,
        "diagnosed_on": final.diagnosed_on.isoformat(),
        "comment": final.comment,
    }


def record_final_diagnosis(
    lesion: Lesion,
    *,
    recorded_by,
    diagnosis: str,
    method: str,
    diagnosed_on: datetime.date,
    comment: str = "",
    via: str = audit.Via.PAGE,
) -> FinalDiagnosis:
    """Record, or change, what `lesion` turned out to be.

    A ValidationError, and nothing stored, when the values make no sense. Who may do it
    is the caller's check (`may_record`), as with the other services. The audit event
    names the lesion and carries the previous and the new values: who changed what."""
    comment = comment.strip()
    check_final_diagnosis(diagnosis=diagnosis, method=method, diagnosed_on=diagnosed_on, comment=comment)
    with transaction.atomic():
        # Locked, so that two reviewers saving at once are both in the trail, in order.
        final = FinalDiagnosis.objects.select_for_update().filter(lesion=lesion).first()
        previous = _as_details(final)
        if final is None:
            final = FinalDiagnosis(lesion=lesion)
        final.diagnosis, final.method, final.diagnosed_on, final.comment = diagnosis, method, diagnosed_on, comment
        final.recorded_by = recorded_by
        final.recorded_at = timezone.now()
        final.save()
        audit.record(
            recorded_by,
            audit.Action.FINAL_DIAGNOSIS,
            lesion,
            via=via,
            **_as_details(final),
            previous=previous,
        )
    lesion.final_diagnosis = final
    return final


def follow_as_lesion(upload: Upload, *, name: str, user, via: str = audit.Via.PAGE) -> Lesion:
    """Make a photo uploaded without a lesion the visit of one (new, or an existing lesion of
    the same patient by that name), so that its final diagnosis can be recorded.

    Only a photo with no lesion yet is linked (one already linked keeps its lesion), and
    only with a patient reference: a lesion belongs to a patient. Audited."""
    if upload.lesion_id is not None:
        return upload.lesion
    if not upload.patient_ref:
        raise ValidationError(
            "This photo has no patient reference, and a lesion belongs to a patient: its final diagnosis "
            "cannot be recorded."
        )
    with transaction.atomic():
        lesion = services.find_or_create_lesion(patient_ref=upload.patient_ref, name=name, created_by=user)
        # Conditional: a photo linked a moment ago by someone else keeps that lesion.
        if Upload.objects.filter(pk=upload.pk, lesion__isnull=True).update(lesion=lesion):
            audit.record(user, audit.Action.LINK, lesion, via=via, upload=upload.pk)
    upload.refresh_from_db()
    return upload.lesion


def final_diagnosis_json(final: FinalDiagnosis | None) -> dict | None:
    if final is None:
        return None
    return {
        "lesion": final.lesion_id,
        "diagnosis": final.diagnosis,
        "diagnosis_display": final.get_diagnosis_display(),
        "malignant": final.is_malignant,
        "method": final.method,
        "method_display": final.get_method_display(),
        "diagnosed_on": final.diagnosed_on.isoformat(),
        "comment": final.comment,
        "recorded_by": final.recorded_by.get_username(),
        "recorded_at": final.recorded_at.isoformat(),
    }
