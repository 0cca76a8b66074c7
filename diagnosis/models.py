"""What the clinic keeps: an upload (the stored image and what the clinician said
about it), the lesion it shows when that lesion is followed over time, the model's
prediction for it (with its Grad-CAM heat map), the reviewer's decision, and the
audit trail of who did what.

The model's output fields are written once, by `services.run_prediction`; the
review fields are written by `services.record_review`. Neither writes the other's.
Audit events are only ever added (`audit.record`), never changed.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from .bodymap import site_at
from .choices import BodySite, MapView  # noqa: F401 (the models' vocabulary, imported from here too)
from .reasons import public_reason
from .validators import no_bidi_controls


def random_image_name(instance, filename: str) -> str:
    """Stored images get a random name; the uploader's file name is never kept
    (it can hold a patient's name). The extension comes from the re-encoded format."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"uploads/{uuid.uuid4().hex}.{extension}"


def random_thumbnail_name(instance, filename: str) -> str:
    return f"uploads/thumbnails/{uuid.uuid4().hex}.jpg"


def random_heatmap_name(instance, filename: str) -> str:
    return f"uploads/heatmaps/{uuid.uuid4().hex}.png"


class Lesion(models.Model):
    """One mole of one patient, followed over time: its uploads are the visits.

    It belongs to the pseudonymous patient reference, never to a name; its own
    name says where it is ("left shoulder, upper"), unique per patient whatever
    the capitals."""

    patient_ref = models.CharField("patient reference", max_length=64, db_index=True)
    name = models.CharField(
        max_length=100, validators=[no_bidi_controls], help_text='Where it is, e.g. "left shoulder, upper".'
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="skin_lesions")
    created_at = models.DateTimeField(auto_now_add=True)
    # Its pin on the body map (diagnosis/bodymap.py): the side of the outline and the point on it,
    # in the outline's own units; all three or none. The body site of its photos follows the pin.
    map_view = models.CharField("body map side", max_length=8, choices=MapView.choices, blank=True)
    map_x = models.FloatField("body map x", null=True, blank=True)
    map_y = models.FloatField("body map y", null=True, blank=True)

    class Meta:
        ordering = ["patient_ref", "name", "id"]
        constraints = [
            models.UniqueConstraint("patient_ref", Lower("name"), name="one_lesion_name_per_patient"),
            models.CheckConstraint(name="lesion_has_patient_and_name", condition=~Q(patient_ref="") & ~Q(name="")),
            models.CheckConstraint(
                name="lesion_pin_whole_or_none",
                condition=Q(map_view="", map_x__isnull=True, map_y__isnull=True)
                | (~Q(map_view="") & Q(map_x__isnull=False, map_y__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.patient_ref} · {self.name}"

    @property
    def has_pin(self) -> bool:
        return bool(self.map_view) and self.map_x is not None and self.map_y is not None

    @property
    def pin_site(self) -> str:
        """The body site under the pin (a BodySite value), "" without a pin."""
        return site_at(self.map_view, self.map_x, self.map_y) if self.has_pin else ""

    @property
    def pin_description(self) -> str:
        """The pin in words ("Chest, front of the body"), for pages and the letter."""
        if not self.has_pin:
            return ""
        return f"{BodySite(self.pin_site).label}, {self.get_map_view_display().lower()} of the body"


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
    note = models.TextField(blank=True, validators=[no_bidi_controls])
    lesion = models.ForeignKey(
        Lesion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="uploads",
        help_text="The lesion this photo shows, when it is followed over time.",
    )
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
        # The model's image check refused the photo (not a dermoscopic image, too dark,
        # blurred...): a final answer, like "done", but without a probability.
        REFUSED = "refused", "Refused by the image check"

    class Outcome(models.TextChoices):
        # What the clinician reads; the values are ml.serving.classifier.OUTCOMES.
        NEEDS_DOCTOR = "needs_doctor", "Needs a doctor"
        UNCERTAIN = "uncertain", "Uncertain — have a doctor look"
        LOW_RISK = "low_risk", "Low risk"
        NOT_ASSESSED = "not_assessed", "Not assessed"

    class Label(models.TextChoices):
        BENIGN = "benign", "Benign"
        MALIGNANT = "malignant", "Malignant"

    class Decision(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed: needs a doctor"
        DISMISSED = "dismissed", "Dismissed: no doctor needed"
        OTHER = "other", "Other (see comment)"

    RETRYABLE = (Status.PENDING, Status.NO_MODEL, Status.FAILED)
    FINAL = (Status.DONE, Status.REFUSED)  # what the model said; never rewritten
    # The review queue: what a doctor should look at, until someone has.
    QUEUE_OUTCOMES = (Outcome.NEEDS_DOCTOR, Outcome.UNCERTAIN)
    # For "moved into a higher outcome" (lesions followed over time).
    OUTCOME_RANK = {Outcome.LOW_RISK: 0, Outcome.UNCERTAIN: 1, Outcome.NEEDS_DOCTOR: 2}

    upload = models.OneToOneField(Upload, on_delete=models.CASCADE, related_name="prediction")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # What the model said: written by services.run_prediction only.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.TextField(blank=True, help_text="Why it was not assessed (image check, no model, failure).")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.NOT_ASSESSED, db_index=True)
    label = models.CharField(max_length=16, choices=Label.choices, blank=True)
    probability_malignant = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True, help_text="At or above it: needs a doctor.")
    uncertain_threshold = models.FloatField(
        null=True, blank=True, help_text="Lower edge of the uncertain band (up to the threshold)."
    )
    near_boundary = models.BooleanField(
        "close to a boundary",
        default=False,
        help_text="The probability is so close to an outcome boundary that the same photo turned or flipped can "
        "get another outcome (the margin is the model's, fitted on its validation images).",
    )
    views_averaged = models.PositiveSmallIntegerField(
        "views averaged",
        default=1,
        help_text="How many views of the photo the probability averages: 1, the photo as it is; 8 where the model "
        "checked a close call again with the photo flipped and turned in every way.",
    )
    gate_measures = models.JSONField(
        "image check measures",
        default=dict,
        blank=True,
        help_text="What the model's image check measured (brightness, contrast, sharpness, familiarity...).",
    )
    heatmap = models.ImageField(
        "heat map",
        upload_to=random_heatmap_name,
        blank=True,
        db_index=True,
        help_text="Where in the image the model's answer came from, drawn over the photo (Grad-CAM or occlusion: heatmap_method).",
    )
    heatmap_method = models.CharField(
        "heat map method",
        max_length=16,
        blank=True,
        default="gradcam",
        help_text="How the heat map was drawn: gradcam or occlusion (settings.SKINCARE_HEATMAP when it was scored).",
    )
    model_version = models.CharField(max_length=100, blank=True, db_index=True)
    elapsed_ms = models.FloatField("prediction time (ms)", null=True, blank=True)
    predicted_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    # What the reviewer decided: written by services.record_review only.
    review_decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    review_comment = models.TextField(blank=True, validators=[no_bidi_controls])
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
            models.CheckConstraint(
                name="assessed_only_when_done",
                condition=Q(outcome="not_assessed") | Q(status="done"),
            ),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.pk}: {self.get_outcome_display()}"

    @property
    def is_flagged(self) -> bool:
        """Needs a doctor, or uncertain: a doctor should look (the review queue)."""
        return self.outcome in self.QUEUE_OUTCOMES

    @property
    def is_assessed(self) -> bool:
        return self.outcome != self.Outcome.NOT_ASSESSED

    @property
    def has_uncertain_band(self) -> bool:
        return (
            self.uncertain_threshold is not None
            and self.threshold is not None
            and self.uncertain_threshold < self.threshold
        )

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
            p = self.probability_malignant
            if self.outcome == self.Outcome.NEEDS_DOCTOR:
                relation = f"is at or above the threshold {self.threshold:.3f}"
            elif self.outcome == self.Outcome.UNCERTAIN:
                relation = (
                    f"is below the threshold {self.threshold:.3f} but at or above the uncertain "
                    f"threshold {self.uncertain_threshold:.3f}"
                )
            elif self.has_uncertain_band:
                relation = f"is below the uncertain threshold {self.uncertain_threshold:.3f}"
            else:
                relation = f"is below the threshold {self.threshold:.3f}"
            return f"{self.get_outcome_display()}: the probability of malignancy {p:.3f} {relation}."
        if self.status == self.Status.REFUSED:
            return f"Not assessed: {public_reason(self.reason)} The upload is saved; the model gives no probability for it."
        if self.status == self.Status.NO_MODEL:
            return "Not assessed: no model available. The upload is saved and can be assessed later with a retry."
        if self.status == self.Status.FAILED:
            return f"Not assessed: the prediction failed ({public_reason(self.reason)}). The upload is saved; retry it."
        return "Not assessed yet: the prediction has not run. The upload is saved; retry it."

    @property
    def next_step(self) -> str:
        """The one thing to do next (diagnosis/wording.py): the page, the API and the letter say the same."""
        from . import wording

        return wording.next_step(self)

    @property
    def heatmap_name(self) -> str:
        """ "Heat map (Grad-CAM)" or "Heat map (occlusion)": the method this result's map was drawn with."""
        from . import wording

        return wording.heatmap_name(self.heatmap_method)

    @property
    def heatmap_caption(self) -> str:
        """What this result's heat map is and is not (diagnosis/wording.py), for its method."""
        from . import wording

        return wording.heatmap_caption(self.heatmap_method)

    @property
    def score(self) -> str:
        from . import wording

        return wording.score(self)

    @property
    def score_explained(self) -> str:
        from . import wording

        return wording.score_explained(self)

    @property
    def shows_heatmap(self) -> bool:
        """The heat map is offered (behind a toggle, with its limits) only on a result that asks for a
        doctor: on a low-risk result the map marks what little speaks for malignancy, often the skin
        around the lesion, and would read as a finding."""
        return bool(self.heatmap) and self.is_flagged

    @property
    def boundary_note(self) -> str:
        """What the clinician should know about a result close to the boundary that decides whether a
        doctor looks (wording.could_change_action); "" otherwise, including near the edge between
        "uncertain" and "needs a doctor", where a doctor looks either way."""
        from . import wording

        if not (self.near_boundary and self.status == self.Status.DONE and wording.could_change_action(self)):
            return ""
        if self.views_averaged > 1:  # the model looked again with the photo turned every way (ml/serving/tta.py)
            note = (
                f"Close to a boundary: checked again with the photo flipped and turned in all "
                f"{self.views_averaged} ways, and this is their average. Another photo of the lesion can still "
                f"get another outcome."
            )
        else:
            note = (
                "Close to a boundary: the same photo turned or flipped can get another outcome, and so can "
                "another photo of the lesion."
            )
        if self.outcome == self.Outcome.LOW_RISK:
            note += " Low risk here is a close call: when in doubt, have a doctor look."
        return note

    @property
    def review_state(self) -> str:
        if not self.is_reviewed:
            return "Not reviewed"
        return self.get_review_decision_display()


class AuditEvent(models.Model):
    """One thing someone did: uploaded, viewed, reviewed, retried. Only ever added.

    The object is named by type and id (and a snapshot of its name), so that the
    trail reads the same after the object has changed."""

    class Action(models.TextChoices):
        UPLOAD = "upload", "Uploaded"
        VIEW = "view", "Viewed"
        REVIEW = "review", "Reviewed"
        RETRY = "retry", "Retried the prediction"
        FINAL_DIAGNOSIS = "final_diagnosis", "Recorded the final diagnosis"
        LINK = "link", "Linked the photo to a lesion"
        EXPORT = "export", "Exported"
        PIN = "pin", "Marked on the body map"
        LETTER = "letter", "Downloaded the referral letter"
        # A patient's data erased on request: who and when, never what (diagnosis/erasure.py).
        ERASE = "erase", "Erased a patient's data"
        # Too many failed logins (django-axes): the username tried, never the password.
        LOCKOUT = "lockout", "Locked out after failed logins"

    class Via(models.TextChoices):
        PAGE = "page", "Site"
        API = "api", "JSON API"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "Management command"

    at = models.DateTimeField("when", default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="skin_audit_events",
        help_text="Empty for a management command.",
    )
    action = models.CharField(max_length=16, choices=Action.choices, db_index=True)
    via = models.CharField(max_length=16, choices=Via.choices)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, null=True, blank=True)
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    target = GenericForeignKey("content_type", "object_id")
    object_repr = models.CharField("object", max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        who = self.user.get_username() if self.user else "system"
        return f"{self.at:%Y-%m-%d %H:%M:%S} {who} {self.get_action_display().lower()} {self.object_repr}"


class FinalDiagnosis(models.Model):
    """What a lesion turned out to be, recorded by a reviewer: the truth the model's
    predictions of that lesion's photos are measured against (diagnosis/performance.py).

    One per lesion, and it applies to every photo of the lesion. It may be changed
    (final_diagnoses.record_final_diagnosis); the audit trail keeps every earlier version."""

    class Diagnosis(models.TextChoices):
        MELANOMA_IN_SITU = "melanoma_in_situ", "Melanoma in situ"
        MELANOMA_INVASIVE = "melanoma_invasive", "Melanoma, invasive"
        BASAL_CELL_CARCINOMA = "basal_cell_carcinoma", "Basal cell carcinoma"
        SQUAMOUS_CELL_CARCINOMA = "squamous_cell_carcinoma", "Squamous cell carcinoma"
        ACTINIC_KERATOSIS = "actinic_keratosis", "Actinic keratosis"
        NEVUS_COMMON = "nevus_common", "Nevus, common"
        NEVUS_DYSPLASTIC = "nevus_dysplastic", "Nevus, dysplastic"
        SEBORRHEIC_KERATOSIS = "seborrheic_keratosis", "Seborrheic keratosis"
        DERMATOFIBROMA = "dermatofibroma", "Dermatofibroma"
        VASCULAR = "vascular", "Vascular lesion"
        OTHER_BENIGN = "other_benign", "Other benign (see comment)"
        OTHER_MALIGNANT = "other_malignant", "Other malignant (see comment)"

    class Method(models.TextChoices):
        HISTOPATHOLOGY = "histopathology", "Histopathology"
        CLINICAL = "clinical", "Dermatologist's clinical diagnosis"
        FOLLOW_UP = "follow_up", "Follow-up without change"

    # The model's "needs a doctor" class: what it was trained to call malignant (HAM10000's
    # mel, bcc and akiec, plus scc). Actinic keratosis is in it because the model's target
    # is (akiec), although it is premalignant rather than a cancer.
    TARGET = frozenset(
        {
            Diagnosis.MELANOMA_IN_SITU,
            Diagnosis.MELANOMA_INVASIVE,
            Diagnosis.BASAL_CELL_CARCINOMA,
            Diagnosis.SQUAMOUS_CELL_CARCINOMA,
            Diagnosis.ACTINIC_KERATOSIS,
            Diagnosis.OTHER_MALIGNANT,
        }
    )
    NEEDS_COMMENT = frozenset({Diagnosis.OTHER_BENIGN, Diagnosis.OTHER_MALIGNANT})

    lesion = models.OneToOneField(Lesion, on_delete=models.PROTECT, related_name="final_diagnosis")
    diagnosis = models.CharField(max_length=32, choices=Diagnosis.choices, db_index=True)
    method = models.CharField("how it was established", max_length=32, choices=Method.choices)
    diagnosed_on = models.DateField("date of the diagnosis")
    comment = models.TextField(blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="skin_final_diagnoses"
    )
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        verbose_name_plural = "final diagnoses"

    def __str__(self) -> str:
        return f"{self.lesion}: {self.get_diagnosis_display()}"

    @property
    def is_malignant(self) -> bool:
        """In the model's "needs a doctor" class (malignant, or actinic keratosis)."""
        return self.diagnosis in self.TARGET
