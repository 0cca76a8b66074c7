"""What the clinic keeps: an upload (the stored image and what the clinician said
about it), the model's prediction for it, and the reviewer's decision.

The model's output fields are written once, by `services.run_prediction`; the
review fields are written by `services.record_review`. Neither writes the other's.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


def random_image_name(instance, filename: str) -> str:
    """Stored images get a random name; the uploader's file name is never kept
    (it can hold a patient's name). The extension comes from the re-encoded format."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"uploads/{uuid.uuid4().hex}.{extension}"


def random_thumbnail_name(instance, filename: str) -> str:
    return f"uploads/thumbnails/{uuid.uuid4().hex}.jpg"


class BodySite(models.TextChoices):
    # HAM10000's localisation vocabulary, so that uploads and training data agree.
    SCALP = "scalp", "Scalp"
    FACE = "face", "Face"
    EAR = "ear", "Ear"
    NECK = "neck", "Neck"
    CHEST = "chest", "Chest"
    ABDOMEN = "abdomen", "Abdomen"
    BACK = "back", "Back"
    TRUNK = "trunk", "Trunk"
    UPPER_EXTREMITY = "upper extremity", "Upper extremity"
    HAND = "hand", "Hand"
    LOWER_EXTREMITY = "lower extremity", "Lower extremity"
    FOOT = "foot", "Foot"
    ACRAL = "acral", "Acral (palm or sole)"
    GENITAL = "genital", "Genital"
    UNKNOWN = "unknown", "Unknown"


class Upload(models.Model):
    """One photo as stored: re-encoded (EXIF and GPS gone) under a random name."""

    # Indexed: the media view finds the upload by the requested file name.
    image = models.ImageField(upload_to=random_image_name, db_index=True)
    thumbnail = models.ImageField(upload_to=random_thumbnail_name, blank=True, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_format = models.CharField(max_length=16, help_text="Format of the uploaded bytes, as Pillow read them.")
    original_size = models.PositiveBigIntegerField(help_text="Size of the uploaded file in bytes.")
    patient_ref = models.CharField("patient reference", max_length=64, blank=True, db_index=True)
    body_site = models.CharField(max_length=32, choices=BodySite.choices, blank=True)
    note = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="skin_uploads")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        ref = f" ({self.patient_ref})" if self.patient_ref else ""
        return f"Upload {self.pk}{ref}"


class Prediction(models.Model):
    """The model's answer for one upload, and the reviewer's decision about it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        NO_MODEL = "no_model", "No model available"
        FAILED = "failed", "Failed"

    class Outcome(models.TextChoices):
        # What the clinician reads. A later issue adds "uncertain" between the two.
        NEEDS_DOCTOR = "needs_doctor", "Needs a doctor"
        LOW_RISK = "low_risk", "No doctor needed"
        NOT_ASSESSED = "not_assessed", "Not assessed"

    class Label(models.TextChoices):
        BENIGN = "benign", "Benign"
        MALIGNANT = "malignant", "Malignant"

    class Decision(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed: needs a doctor"
        DISMISSED = "dismissed", "Dismissed: no doctor needed"
        OTHER = "other", "Other (see comment)"

    RETRYABLE = (Status.PENDING, Status.NO_MODEL, Status.FAILED)

    upload = models.OneToOneField(Upload, on_delete=models.CASCADE, related_name="prediction")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # What the model said: written by services.run_prediction only.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_message = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.NOT_ASSESSED, db_index=True)
    label = models.CharField(max_length=16, choices=Label.choices, blank=True)
    probability_malignant = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=100, blank=True, db_index=True)
    elapsed_ms = models.FloatField("prediction time (ms)", null=True, blank=True)
    predicted_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    # What the reviewer decided: written by services.record_review only.
    review_decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    review_comment = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="skin_reviews"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                name="probability_between_0_and_1",
                condition=Q(probability_malignant__isnull=True)
                | Q(probability_malignant__gte=0.0, probability_malignant__lte=1.0),
            ),
            models.CheckConstraint(
                name="done_has_probability",
                condition=~Q(status="done") | Q(probability_malignant__isnull=False, threshold__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.pk}: {self.get_outcome_display()}"

    @property
    def is_flagged(self) -> bool:
        return self.outcome == self.Outcome.NEEDS_DOCTOR

    @property
    def is_reviewed(self) -> bool:
        return self.reviewed_at is not None

    @property
    def is_retryable(self) -> bool:
        return self.status in self.RETRYABLE

    @property
    def message(self) -> str:
        """One sentence for the clinician about where this prediction stands."""
        if self.status == self.Status.DONE:
            relation = "at or above" if self.probability_malignant >= self.threshold else "below"
            return (
                f"{self.get_outcome_display()}: the probability of malignancy {self.probability_malignant:.3f} "
                f"is {relation} the threshold {self.threshold:.3f}."
            )
        if self.status == self.Status.NO_MODEL:
            return "Not assessed: no model available. The upload is saved and can be assessed later with a retry."
        if self.status == self.Status.FAILED:
            detail = self.status_message.removeprefix("failed: ")
            return f"Not assessed: the prediction failed ({detail}). The upload is saved; retry it."
        return "Not assessed yet: the prediction has not run. The upload is saved; retry it."

    @property
    def review_state(self) -> str:
        if not self.is_reviewed:
            return "Not reviewed"
        return self.get_review_decision_display()
