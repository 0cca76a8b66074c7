"""Reading what the clinic has stored, for pages, the API and the media view.

Who may see what is decided here and nowhere else.
"""

from __future__ import annotations

from django.db.models import Count, Max, Q, QuerySet
from django.db.models.fields.files import FieldFile

from .models import Lesion, Prediction


def _may_see(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def visible_predictions(user) -> QuerySet[Prediction]:
    """Every signed-in, active user sees the clinic's whole history (it is kept
    for review, and the history page names each uploader). A later rule, such as
    one clinic per user, narrows this one function (and visible_lesions)."""
    if not _may_see(user):
        return Prediction.objects.none()
    return Prediction.objects.select_related(
        "upload", "upload__uploaded_by", "upload__lesion", "upload__lesion__final_diagnosis", "reviewed_by"
    ).order_by("-upload__created_at", "-id")


def visible_lesions(user) -> QuerySet[Lesion]:
    if not _may_see(user):
        return Lesion.objects.none()
    return Lesion.objects.all()


def history(
    user,
    *,
    outcome: str = "",
    unreviewed: bool = False,
    patient_ref: str = "",
    patient: str = "",
    lesion: int | None = None,
) -> QuerySet[Prediction]:
    """`patient_ref`: a search (part of the reference); `patient`: exactly this patient."""
    predictions = visible_predictions(user)
    if outcome == "attention":
        predictions = predictions.filter(outcome__in=Prediction.QUEUE_OUTCOMES)
    elif outcome in Prediction.Outcome.values:
        predictions = predictions.filter(outcome=outcome)
    if unreviewed:
        predictions = predictions.filter(reviewed_at__isnull=True)
    if patient_ref.strip():
        predictions = predictions.filter(upload__patient_ref__icontains=patient_ref.strip())
    if patient.strip():
        predictions = predictions.filter(upload__patient_ref=patient.strip())
    if lesion is not None:
        predictions = predictions.filter(upload__lesion_id=lesion)
    return predictions


def review_queue(user) -> QuerySet[Prediction]:
    """What a doctor should look at: needs a doctor or uncertain, not yet reviewed,
    oldest upload first (the longest waiting is seen first)."""
    return (
        visible_predictions(user)
        .filter(outcome__in=Prediction.QUEUE_OUTCOMES, reviewed_at__isnull=True)
        .order_by("upload__created_at", "id")
    )


def lesions(user, *, patient: str = "") -> QuerySet[Lesion]:
    """Lesions with their number of visits and the date of the last, by patient then name."""
    found = visible_lesions(user).annotate(visits=Count("uploads"), last_visit=Max("uploads__created_at"))
    if patient.strip():
        found = found.filter(patient_ref=patient.strip())
    return found.order_by("patient_ref", "name", "id")


def lesion_visits(user, lesion: Lesion) -> QuerySet[Prediction]:
    """The predictions of a lesion's photos, oldest first."""
    return visible_predictions(user).filter(upload__lesion=lesion).order_by("upload__created_at", "id")


def media_file(user, name: str) -> FieldFile | None:
    """The stored file called `name`, if it belongs to an upload the user may see
    (its photo, thumbnail or heat map). Files that no visible upload points at are
    never served."""
    if not name:
        return None
    prediction = (
        visible_predictions(user).filter(Q(upload__image=name) | Q(upload__thumbnail=name) | Q(heatmap=name)).first()
    )
    if prediction is None:
        return None
    upload = prediction.upload
    for field in (upload.image, upload.thumbnail, prediction.heatmap):
        if field.name == name:
            return field
    return None
