"""The clinic's business logic, as plain functions.

Views, the JSON API, the admin and management commands all call these; none of
them writes an Upload or a Prediction itself. The model is reached only through
`ml.classifier.predict`, so nothing here imports TensorFlow.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ml import classifier

from .images import CheckedImage, encode_png, encode_thumbnail
from .models import Prediction, Upload

logger = logging.getLogger(__name__)


def store_upload(*, uploaded_by, image: CheckedImage, patient_ref: str = "", body_site: str = "", note: str = "") -> Upload:
    """Store the re-encoded image under a random name, with a pending prediction.

    The upload is committed before the model is asked anything, so that a missing
    or failing model can never lose it.
    """
    upload = Upload(
        uploaded_by=uploaded_by,
        width=image.width,
        height=image.height,
        original_format=image.format,
        original_size=image.size_bytes,
        patient_ref=patient_ref.strip(),
        body_site=body_site,
        note=note.strip(),
    )
    upload.image.save("image.png", ContentFile(encode_png(image.image)), save=False)
    try:
        upload.thumbnail.save("thumbnail.jpg", ContentFile(encode_thumbnail(image.image)), save=False)
        with transaction.atomic():
            upload.save()
            Prediction.objects.create(upload=upload)
    except BaseException:
        # No row points at the files: remove them rather than leave orphans.
        for field in (upload.image, upload.thumbnail):
            if field.name:
                field.storage.delete(field.name)
        raise
    return upload


def run_prediction(prediction: Prediction) -> Prediction:
    """Ask the model about the stored image and record what happened.

    Whatever the model does, the prediction row says so afterwards: done, no model
    available, or failed with the reason. A prediction that is already done is
    left alone; what the model said is never rewritten.
    """
    if prediction.status == Prediction.Status.DONE:
        return prediction
    fields: dict = {"attempts": F("attempts") + 1}
    try:
        with prediction.upload.image.open("rb") as stored:
            result = classifier.predict(stored.read())
    except classifier.ModelUnavailable as exc:
        fields.update(status=Prediction.Status.NO_MODEL, status_message=str(exc))
        logger.warning("Prediction %s not assessed: %s", prediction.pk, exc)
    except Exception as exc:  # PredictionFailed, or anything unforeseen: the upload stays
        fields.update(status=Prediction.Status.FAILED, status_message=f"failed: {type(exc).__name__}: {exc}")
        logger.exception("Prediction %s failed", prediction.pk)
    else:
        fields.update(
            status=Prediction.Status.DONE,
            status_message="",
            label=result.label,
            outcome=Prediction.Outcome.NEEDS_DOCTOR if result.label == "malignant" else Prediction.Outcome.LOW_RISK,
            probability_malignant=result.probability_malignant,
            threshold=result.threshold,
            model_version=result.model_version,
            elapsed_ms=result.elapsed_ms,
            predicted_at=timezone.now(),
        )
    # Conditional update: a concurrent retry that finished first is not overwritten.
    Prediction.objects.filter(pk=prediction.pk).exclude(status=Prediction.Status.DONE).update(**fields)
    prediction.refresh_from_db()
    return prediction


def submit_upload(*, uploaded_by, image: CheckedImage, patient_ref: str = "", body_site: str = "", note: str = "") -> Prediction:
    """What the upload page and the API do: store, then predict."""
    upload = store_upload(uploaded_by=uploaded_by, image=image, patient_ref=patient_ref, body_site=body_site, note=note)
    return run_prediction(upload.prediction)


def retry_predictions(predictions: Iterable[Prediction] | None = None) -> Counter:
    """Run the model again for predictions not yet done; returns a count per resulting status.

    Without an argument, every retryable prediction is retried, oldest first.
    """
    if predictions is None:
        predictions = Prediction.objects.filter(status__in=Prediction.RETRYABLE).order_by("created_at", "id")
    outcome: Counter = Counter()
    for prediction in predictions:
        if not prediction.is_retryable:
            outcome["skipped (already done)"] += 1
            continue
        outcome[run_prediction(prediction).status] += 1
    return outcome


def check_review(decision: str, comment: str) -> None:
    """Raise ValidationError, in words for the reviewer, if this review cannot be recorded."""
    if decision and decision not in Prediction.Decision.values:
        raise ValidationError(f"Unknown review decision {decision!r}.")
    if decision == Prediction.Decision.OTHER and not comment.strip():
        raise ValidationError("Say in the comment what the other decision is.")


def record_review(prediction: Prediction, *, reviewer, decision: str, comment: str = "") -> Prediction:
    """Record (or, with an empty decision, withdraw) a reviewer's decision.

    Only the review fields are written, so the model's output stays as it was.
    """
    check_review(decision, comment)
    comment = comment.strip()
    if decision:
        prediction.review_decision = decision
        prediction.review_comment = comment
        prediction.reviewed_by = reviewer
        prediction.reviewed_at = timezone.now()
    else:
        prediction.review_decision = ""
        prediction.review_comment = comment
        prediction.reviewed_by = None
        prediction.reviewed_at = None
    prediction.save(update_fields=["review_decision", "review_comment", "reviewed_by", "reviewed_at"])
    return prediction


def review_many(predictions: Iterable[Prediction], *, reviewer, decision: str, comment: str = "") -> int:
    """The bulk form of record_review, for the common decisions."""
    count = 0
    with transaction.atomic():
        for prediction in predictions:
            record_review(prediction, reviewer=reviewer, decision=decision, comment=comment)
            count += 1
    return count
