"""Reading what the clinic has stored, for pages, the API and the media view.

Who may see what is decided here and nowhere else.
"""
from __future__ import annotations

from django.db.models import Q, QuerySet
from django.db.models.fields.files import FieldFile

from .models import Prediction


def visible_predictions(user) -> QuerySet[Prediction]:
    """Every signed-in, active user sees the clinic's whole history (it is kept
    for review, and the history page names each uploader). A later rule, such as
    one clinic per user, narrows this one function."""
    if not (user and user.is_authenticated and user.is_active):
        return Prediction.objects.none()
    return Prediction.objects.select_related("upload", "upload__uploaded_by", "reviewed_by").order_by(
        "-upload__created_at", "-id"
    )


def history(user, *, flagged: bool = False, unreviewed: bool = False, patient_ref: str = "") -> QuerySet[Prediction]:
    predictions = visible_predictions(user)
    if flagged:
        predictions = predictions.filter(outcome=Prediction.Outcome.NEEDS_DOCTOR)
    if unreviewed:
        predictions = predictions.filter(reviewed_at__isnull=True)
    if patient_ref.strip():
        predictions = predictions.filter(upload__patient_ref__icontains=patient_ref.strip())
    return predictions


def media_file(user, name: str) -> FieldFile | None:
    """The stored file called `name`, if it belongs to an upload the user may see.
    Files that no visible upload points at are never served."""
    if not name:
        return None
    prediction = visible_predictions(user).filter(Q(upload__image=name) | Q(upload__thumbnail=name)).first()
    if prediction is None:
        return None
    upload = prediction.upload
    return upload.image if upload.image.name == name else upload.thumbnail
