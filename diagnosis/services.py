"""The clinic's business logic, as plain functions.

Views, the JSON API, the admin and management commands all call these; none of
them writes an Upload or a Prediction itself. The model is reached only through
`ml.classifier.predict`, so nothing here imports TensorFlow.
"""
from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml import classifier, heatmap

from . import audit, storage
from .images import CheckedImage, encode_png, encode_thumbnail
from .models import Lesion, Prediction, Upload
from .reasons import public_reason
from .validators import no_bidi_controls

logger = logging.getLogger(__name__)


def find_or_create_lesion(*, patient_ref: str, name: str, created_by) -> Lesion:
    """The patient's lesion of that name (whatever the capitals), created if new."""
    patient_ref, name = patient_ref.strip(), " ".join(name.split())
    if not patient_ref or not name:
        raise ValidationError("A lesion needs both the patient reference and a name.")
    no_bidi_controls(name)
    existing = Lesion.objects.filter(patient_ref=patient_ref, name__iexact=name).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Lesion.objects.create(patient_ref=patient_ref, name=name, created_by=created_by)
    except IntegrityError:  # created by a concurrent upload a moment ago
        return Lesion.objects.get(patient_ref=patient_ref, name__iexact=name)


def store_upload(
    *,
    uploaded_by,
    image: CheckedImage,
    patient_ref: str = "",
    body_site: str = "",
    note: str = "",
    lesion: Lesion | None = None,
    lesion_name: str = "",
    via: str = audit.Via.PAGE,
) -> Upload:
    """Store the re-encoded image under a random name, with a pending prediction.

    The upload is committed before the model is asked anything, so that a missing
    or failing model can never lose it. With `lesion` (or `lesion_name`, a new or
    existing lesion of this patient) the photo is a visit of that lesion.
    """
    patient_ref = patient_ref.strip()
    no_bidi_controls(note)
    if lesion is not None and patient_ref and lesion.patient_ref != patient_ref:
        raise ValidationError(f"Lesion {lesion} belongs to patient {lesion.patient_ref}, not {patient_ref}.")
    upload = Upload(
        uploaded_by=uploaded_by,
        width=image.width,
        height=image.height,
        original_format=image.format,
        original_size=image.size_bytes,
        patient_ref=patient_ref or (lesion.patient_ref if lesion else ""),
        body_site=body_site,
        note=note.strip(),
    )
    # A failure anywhere below (the storage, the database) removes the files written here.
    with storage.removed_on_failure() as written:
        written.save(upload.image, "image.png", encode_png(image.image))
        written.save(upload.thumbnail, "thumbnail.jpg", encode_thumbnail(image.image))
        with transaction.atomic():
            if lesion is None and lesion_name.strip():
                lesion = find_or_create_lesion(patient_ref=upload.patient_ref, name=lesion_name, created_by=uploaded_by)
            upload.lesion = lesion
            upload.save()
            prediction = Prediction.objects.create(upload=upload)
            audit.record(
                uploaded_by, audit.Action.UPLOAD, prediction, via=via,
                upload=upload.pk, patient_ref=upload.patient_ref, lesion=lesion.pk if lesion else None,
            )
    return upload


def heatmap_png(upload: Upload, cam) -> bytes:
    """The Grad-CAM map drawn over the stored photo, as PNG."""
    with upload.image.open("rb") as stored:
        with Image.open(stored) as photo:
            drawn = heatmap.overlay(photo, cam)
    buffer = io.BytesIO()
    # Fast compression: optimize=True tripled the request time under load for ~10% smaller files.
    drawn.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def run_prediction(prediction: Prediction) -> Prediction:
    """Ask the model about the stored image and record what happened.

    Whatever the model does, the prediction row says so afterwards: done (needs a
    doctor, uncertain or low risk, with its heat map), refused by the image check,
    no model available, or failed with the reason. A prediction the model has
    answered (done or refused) is left alone; what the model said is never rewritten.
    """
    if prediction.status in Prediction.FINAL:
        return prediction
    fields: dict = {"attempts": F("attempts") + 1}
    stored_heatmap = ""
    try:
        with prediction.upload.image.open("rb") as stored:
            result = classifier.predict(stored.read())
    # The reason is shown to clinicians and API clients: no server path in it (the log has the whole message).
    except classifier.ModelUnavailable as exc:
        fields.update(status=Prediction.Status.NO_MODEL, reason=public_reason(str(exc)))
        logger.warning("Prediction %s not assessed: %s", prediction.pk, exc)
    except classifier.PredictionFailed as exc:  # its message names the cause already
        fields.update(status=Prediction.Status.FAILED, reason=public_reason(str(exc)))
        logger.exception("Prediction %s failed", prediction.pk)
    except Exception as exc:  # anything unforeseen: the upload stays
        fields.update(status=Prediction.Status.FAILED, reason=public_reason(f"{type(exc).__name__}: {exc}"))
        logger.exception("Prediction %s failed", prediction.pk)
    else:
        fields.update(
            threshold=result.threshold,
            uncertain_threshold=result.uncertain_threshold,
            model_version=result.model_version,
            elapsed_ms=result.elapsed_ms,
            predicted_at=timezone.now(),
            gate_measures={name: float(value) for name, value in (result.gate_measures or {}).items()},
        )
        if result.assessed:
            fields.update(
                status=Prediction.Status.DONE,
                reason="",
                outcome=result.outcome,
                label=result.label,
                probability_malignant=result.probability_malignant,
                near_boundary=result.near_boundary,
                views_averaged=result.views_averaged,
            )
            if result.heatmap is not None:
                stored_heatmap = store_heatmap(prediction, result.heatmap)
                fields["heatmap"] = stored_heatmap
        else:
            fields.update(status=Prediction.Status.REFUSED, reason=public_reason(result.reason),
                          outcome=Prediction.Outcome.NOT_ASSESSED)
    # Conditional update: a concurrent retry that finished first is not overwritten.
    try:
        updated = Prediction.objects.filter(pk=prediction.pk).exclude(status__in=Prediction.FINAL).update(**fields)
    except BaseException:
        storage.delete(stored_heatmap)  # no row points at it
        raise
    if not updated and stored_heatmap:
        storage.delete(stored_heatmap)
    prediction.refresh_from_db()
    return prediction


def store_heatmap(prediction: Prediction, cam) -> str:
    """Save the heat map under a random name; returns the name, or "" if it could not be
    drawn (the prediction itself is kept either way)."""
    try:
        return storage.save(prediction.heatmap, "heatmap.png", heatmap_png(prediction.upload, cam))
    except Exception:
        logger.exception("Prediction %s: the heat map could not be drawn", prediction.pk)
        return ""


def submit_upload(*, uploaded_by, image: CheckedImage, via: str = audit.Via.PAGE, **fields) -> Prediction:
    """What the upload page and the API do: store, then predict."""
    upload = store_upload(uploaded_by=uploaded_by, image=image, via=via, **fields)
    return run_prediction(upload.prediction)


def retry_prediction(prediction: Prediction, *, user=None, via: str = audit.Via.PAGE) -> Prediction:
    """Ask the model again about one prediction it has not answered; audited."""
    if not prediction.is_retryable:
        return prediction
    # Not one transaction: the model's answer is kept even if writing the event fails.
    prediction = run_prediction(prediction)
    audit.record(user, audit.Action.RETRY, prediction, via=via, status=prediction.status, outcome=prediction.outcome)
    return prediction


def retry_predictions(predictions: Iterable[Prediction] | None = None, *, user=None, via: str = audit.Via.COMMAND) -> Counter:
    """Run the model again for predictions not yet answered; returns a count per resulting status.

    Without an argument, every retryable prediction is retried, oldest first.
    """
    if predictions is None:
        predictions = Prediction.objects.filter(status__in=Prediction.RETRYABLE).order_by("created_at", "id")
    outcome: Counter = Counter()
    for prediction in predictions:
        if not prediction.is_retryable:
            outcome["skipped (already done)"] += 1
            continue
        outcome[retry_prediction(prediction, user=user, via=via).status] += 1
    return outcome


def note_viewed(user, target, *, via: str, **details) -> None:
    """The audit trail's "viewed": a result page, an API detail, a lesion page, an admin form."""
    audit.record(user, audit.Action.VIEW, target, via=via, **details)


def check_review(decision: str, comment: str) -> None:
    """Raise ValidationError, in words for the reviewer, if this review cannot be recorded."""
    if decision and decision not in Prediction.Decision.values:
        raise ValidationError(f"Unknown review decision {decision!r}.")
    if decision == Prediction.Decision.OTHER and not comment.strip():
        raise ValidationError("Say in the comment what the other decision is.")
    no_bidi_controls(comment)


def record_review(prediction: Prediction, *, reviewer, decision: str, comment: str = "", via: str = audit.Via.PAGE) -> Prediction:
    """Record (or, with an empty decision, withdraw) a reviewer's decision: who, when,
    what and why. A recorded decision takes the prediction out of the review queue.

    Only the review fields are written, so the model's output stays as it was; the
    audit trail keeps every decision, including the ones later changed.
    """
    check_review(decision, comment)
    comment = comment.strip()
    previous = prediction.review_decision or None
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
    with transaction.atomic():
        prediction.save(update_fields=["review_decision", "review_comment", "reviewed_by", "reviewed_at"])
        audit.record(
            reviewer, audit.Action.REVIEW, prediction, via=via,
            decision=decision or None, comment=comment, previous_decision=previous,
            outcome=prediction.outcome, probability_malignant=prediction.probability_malignant,
        )
    return prediction


def review_many(predictions: Iterable[Prediction], *, reviewer, decision: str, comment: str = "", via: str = audit.Via.ADMIN) -> int:
    """The bulk form of record_review, for the common decisions."""
    count = 0
    with transaction.atomic():
        for prediction in predictions:
            record_review(prediction, reviewer=reviewer, decision=decision, comment=comment, via=via)
            count += 1
    return count
