"""The clinic's business logic, as plain functions.

Views, the JSON API, the admin and management commands all call these; none of
them writes an Upload or a Prediction itself. The model is reached only through
`ml.serving.classifier.predict`, so nothing here imports TensorFlow.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml.preprocessing import load_rgb
from ml.serving import classifier, heatmap

from . import audit, bodymap, storage
from .images import CheckedImage, encode_png, encode_thumbnail
from .models import BodySite, Lesion, MapView, Prediction, Upload
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


def check_pin(view: str, x: float | None, y: float | None) -> str:
    """The body site under a body-map pin; ValidationError, in words, if the pin is incomplete or off
    the outline."""
    if view not in MapView.values or x is None or y is None:
        raise ValidationError("A pin on the body map needs the side (front or back) and the point.")
    site = bodymap.site_at(view, x, y)
    if not site:
        raise ValidationError("The pin is off the body outline: click on the body itself.")
    return site


def site_for_pin(pin_site: str, body_site: str) -> str:
    """The body site of a photo of a pinned lesion: the pin's, which a different one contradicts."""
    if body_site and body_site != pin_site:
        raise ValidationError(
            f"The lesion's pin is on the {BodySite(pin_site).label.lower()}, but the body site says "
            f"{BodySite(body_site).label.lower()}: move the pin or change the body site."
        )
    return pin_site


def place_pin(lesion: Lesion, *, view: str, x: float, y: float, user, via: str = audit.Via.PAGE) -> Lesion:
    """Mark where a lesion is on the body map. Its photos' body site follows the pin; the body sites
    they had before are kept in the audit trail."""
    site = check_pin(view, x, y)
    with transaction.atomic():
        previous = {
            str(pk): value for pk, value in lesion.uploads.exclude(body_site=site).values_list("pk", "body_site")
        }
        lesion.map_view, lesion.map_x, lesion.map_y = view, round(float(x), 2), round(float(y), 2)
        lesion.save(update_fields=["map_view", "map_x", "map_y"])
        lesion.uploads.exclude(body_site=site).update(body_site=site)
        audit.record(
            user,
            audit.Action.PIN,
            lesion,
            via=via,
            view=view,
            x=lesion.map_x,
            y=lesion.map_y,
            site=site,
            previous_body_sites=previous or None,
        )
    return lesion


def store_upload(
    *,
    uploaded_by,
    image: CheckedImage,
    patient_ref: str = "",
    body_site: str = "",
    note: str = "",
    lesion: Lesion | None = None,
    lesion_name: str = "",
    map_view: str = "",
    map_x: float | None = None,
    map_y: float | None = None,
    via: str = audit.Via.PAGE,
) -> Upload:
    """Store the re-encoded image under a random name, with a pending prediction.

    The upload is committed before the model is asked anything, so that a missing
    or failing model can never lose it. With `lesion` (or `lesion_name`, a new or
    existing lesion of this patient) the photo is a visit of that lesion; with a pin
    (`map_view`, `map_x`, `map_y`) the lesion is marked there on the body map. The
    photo's body site is the pin's wherever the lesion has one.
    """
    patient_ref = patient_ref.strip()
    no_bidi_controls(note)
    if lesion is not None and patient_ref and lesion.patient_ref != patient_ref:
        raise ValidationError(f"Lesion {lesion} belongs to patient {lesion.patient_ref}, not {patient_ref}.")
    pinned = bool(map_view or map_x is not None or map_y is not None)
    if pinned:
        if lesion is None and not lesion_name.strip():
            raise ValidationError("A pin on the body map marks a lesion followed over time: name the lesion too.")
        body_site = site_for_pin(check_pin(map_view, map_x, map_y), body_site)
    elif lesion is not None and lesion.has_pin:
        body_site = site_for_pin(lesion.pin_site, body_site)
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
                if not pinned and lesion.has_pin:  # an existing lesion, found by its name
                    upload.body_site = site_for_pin(lesion.pin_site, upload.body_site)
            upload.lesion = lesion
            upload.save()
            if pinned:
                place_pin(lesion, view=map_view, x=map_x, y=map_y, user=uploaded_by, via=via)
            prediction = Prediction.objects.create(upload=upload)
            audit.record(
                uploaded_by,
                audit.Action.UPLOAD,
                prediction,
                via=via,
                upload=upload.pk,
                patient_ref=upload.patient_ref,
                lesion=lesion.pk if lesion else None,
            )
    return upload


def stored_photo(upload: Upload) -> Image.Image:
    """The stored photo, decoded: what a retry scores (a fresh upload is scored from memory)."""
    with upload.image.open("rb") as stored:
        with Image.open(stored) as photo:
            return load_rgb(photo)


HEATMAP_MAX_SIDE = 640


def heatmap_png(photo: Image.Image, cam) -> bytes:
    """The heat map (Grad-CAM or occlusion) drawn over the photo (at most HEATMAP_MAX_SIDE pixels a side), as PNG."""
    # A large photo is first shrunk by a whole factor (a box filter, fast), as Pillow's reducing_gap
    # does: the overlay's bilinear resize then reads about a ninth of a 12-megapixel photo's pixels.
    factor = int(max(photo.size) / (2 * HEATMAP_MAX_SIDE))
    if factor >= 2:
        photo = photo.reduce(factor)
    # encode_png: fast and lossless (Pillow's own encoder took longer than drawing the map).
    return encode_png(heatmap.overlay(photo, cam, max_side=HEATMAP_MAX_SIDE))


def run_prediction(prediction: Prediction, image: Image.Image | None = None) -> Prediction:
    """Ask the model about the upload's image and record what happened.

    `image` is the upload decoded by check_image, for a fresh upload: it is scored and the
    heat map drawn from it in memory. Without it (a retry) the stored file is read back.

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
        photo = image if image is not None else stored_photo(prediction.upload)
        result = classifier.predict(photo)
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
                stored_heatmap = store_heatmap(prediction, result.heatmap, photo)
                fields["heatmap"] = stored_heatmap
                fields["heatmap_method"] = result.heatmap_method
        else:
            fields.update(
                status=Prediction.Status.REFUSED,
                reason=public_reason(result.reason),
                outcome=Prediction.Outcome.NOT_ASSESSED,
            )
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


def store_heatmap(prediction: Prediction, cam, photo: Image.Image) -> str:
    """Save the heat map drawn over `photo` (the upload's image) under a random name; returns
    the name, or "" if it could not be drawn (the prediction itself is kept either way)."""
    try:
        return storage.save(prediction.heatmap, "heatmap.png", heatmap_png(photo, cam))
    except Exception:
        logger.exception("Prediction %s: the heat map could not be drawn", prediction.pk)
        return ""


def submit_upload(*, uploaded_by, image: CheckedImage, via: str = audit.Via.PAGE, **fields) -> Prediction:
    """What the upload page and the API do: store, then predict from the image already decoded
    (the stored file is not read back)."""
    upload = store_upload(uploaded_by=uploaded_by, image=image, via=via, **fields)
    return run_prediction(upload.prediction, image=image.image)


def retry_prediction(prediction: Prediction, *, user=None, via: str = audit.Via.PAGE) -> Prediction:
    """Ask the model again about one prediction it has not answered; audited."""
    if not prediction.is_retryable:
        return prediction
    # Not one transaction: the model's answer is kept even if writing the event fails.
    prediction = run_prediction(prediction)
    audit.record(user, audit.Action.RETRY, prediction, via=via, status=prediction.status, outcome=prediction.outcome)
    return prediction


def retry_predictions(
    predictions: Iterable[Prediction] | None = None, *, user=None, via: str = audit.Via.COMMAND
) -> Counter:
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


def note_letter(user, lesion: Lesion, *, via: str) -> None:
    """The audit trail's "downloaded the referral letter": it carries the patient's photos and results."""
    audit.record(user, audit.Action.LETTER, lesion, via=via)


def check_review(decision: str, comment: str) -> None:
    """Raise ValidationError, in words for the reviewer, if this review cannot be recorded."""
    if decision and decision not in Prediction.Decision.values:
        raise ValidationError(f"Unknown review decision {decision!r}.")
    if decision == Prediction.Decision.OTHER and not comment.strip():
        raise ValidationError("Say in the comment what the other decision is.")
    no_bidi_controls(comment)


def record_review(
    prediction: Prediction, *, reviewer, decision: str, comment: str = "", via: str = audit.Via.PAGE
) -> Prediction:
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
            reviewer,
            audit.Action.REVIEW,
            prediction,
            via=via,
            decision=decision or None,
            comment=comment,
            previous_decision=previous,
            outcome=prediction.outcome,
            probability_malignant=prediction.probability_malignant,
        )
    return prediction


def review_many(
    predictions: Iterable[Prediction], *, reviewer, decision: str, comment: str = "", via: str = audit.Via.ADMIN
) -> int:
    """The bulk form of record_review, for the common decisions."""
    count = 0
    with transaction.atomic():
        for prediction in predictions:
            record_review(prediction, reviewer=reviewer, decision=decision, comment=comment, via=via)
            count += 1
    return count
