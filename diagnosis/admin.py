"""The reviewer's side, in the Django admin.

What the model said is shown read-only; a reviewer writes only the decision and
the comment, through services.record_review, which also records who and when.
Nothing is added or deleted here: uploads come through the upload page or the
API, and the history is kept.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .models import Prediction, Upload


def thumbnail_tag(upload: Upload, size: int = 64):
    if not upload.thumbnail:
        return "-"
    return format_html('<img src="{}" alt="" style="width:{}px;height:auto;border-radius:4px">', upload.thumbnail.url, size)


class ReviewedFilter(admin.SimpleListFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def lookups(self, request, model_admin):
        return [("no", "Not yet reviewed"), ("yes", "Reviewed")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(reviewed_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(reviewed_at__isnull=False)
        return queryset


class QueueFilter(admin.SimpleListFilter):
    """The reviewer's two work lists, one click from the change list."""

    title = "work list"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("flagged", "Flagged (needs a doctor), not yet reviewed"), ("not_assessed", "Not assessed (retry)")]

    def queryset(self, request, queryset):
        if self.value() == "flagged":
            return queryset.filter(outcome=Prediction.Outcome.NEEDS_DOCTOR, reviewed_at__isnull=True)
        if self.value() == "not_assessed":
            return queryset.filter(status__in=Prediction.RETRYABLE)
        return queryset


class ReviewForm(forms.ModelForm):
    """The change form's editable part: the decision and the comment."""

    def clean(self):
        cleaned = super().clean()
        try:
            services.check_review(cleaned.get("review_decision", ""), cleaned.get("review_comment", ""))
        except ValidationError as exc:
            self.add_error("review_comment", exc)
        return cleaned


PREDICTION_FIELDS = [
    "status",
    "status_message",
    "outcome",
    "label",
    "probability_malignant",
    "threshold",
    "model_version",
    "elapsed_ms",
    "predicted_at",
    "attempts",
    "created_at",
]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    form = ReviewForm
    list_display = [
        "id",
        "thumbnail_image",
        "verdict",
        "probability",
        "model_version",
        "status",
        "review",
        "patient_ref",
        "uploaded_by",
        "created_at",
    ]
    list_display_links = ["id", "thumbnail_image"]
    list_filter = [QueueFilter, "outcome", ReviewedFilter, "review_decision", "status", "model_version", "created_at"]
    search_fields = ["upload__patient_ref", "upload__note", "review_comment"]
    date_hierarchy = "created_at"
    list_select_related = ["upload", "upload__uploaded_by", "reviewed_by"]
    list_per_page = 50
    actions = ["mark_confirmed", "mark_dismissed", "retry"]
    fieldsets = [
        ("Upload", {"fields": ["image_preview", "upload_link", "patient_ref", "body_site", "note", "uploaded_by"]}),
        ("What the model said (read-only)", {"fields": PREDICTION_FIELDS}),
        ("Review", {"fields": ["review_decision", "review_comment", "reviewed_by", "reviewed_at"]}),
    ]
    readonly_fields = [
        "image_preview",
        "upload_link",
        "patient_ref",
        "body_site",
        "note",
        "uploaded_by",
        *PREDICTION_FIELDS,
        "reviewed_by",
        "reviewed_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="image")
    def thumbnail_image(self, obj):
        return thumbnail_tag(obj.upload)

    @admin.display(description="image")
    def image_preview(self, obj):
        return format_html(
            '<a href="{0}"><img src="{0}" alt="" style="max-width:480px;max-height:360px"></a>', obj.upload.image.url
        )

    @admin.display(description="upload")
    def upload_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:diagnosis_upload_change", args=[obj.upload_id]), obj.upload)

    @admin.display(description="verdict", ordering="outcome")
    def verdict(self, obj):
        return obj.get_outcome_display()

    @admin.display(description="P(malignant)", ordering="probability_malignant")
    def probability(self, obj):
        return "-" if obj.probability_malignant is None else f"{obj.probability_malignant:.3f}"

    @admin.display(description="review", ordering="reviewed_at")
    def review(self, obj):
        return obj.review_state

    @admin.display(description="patient reference", ordering="upload__patient_ref")
    def patient_ref(self, obj):
        return obj.upload.patient_ref

    @admin.display(description="body site")
    def body_site(self, obj):
        return obj.upload.get_body_site_display()

    @admin.display(description="note")
    def note(self, obj):
        return obj.upload.note

    @admin.display(description="uploaded by", ordering="upload__uploaded_by")
    def uploaded_by(self, obj):
        return obj.upload.uploaded_by

    def save_model(self, request, obj, form, change):
        # Only the review fields are editable; record_review writes just those,
        # with the reviewer and the time.
        if {"review_decision", "review_comment"} & set(form.changed_data):
            services.record_review(
                obj,
                reviewer=request.user,
                decision=form.cleaned_data["review_decision"],
                comment=form.cleaned_data["review_comment"],
            )

    def _review_selected(self, request, queryset, decision):
        count = services.review_many(queryset, reviewer=request.user, decision=decision)
        self.message_user(request, f"{count} prediction(s) marked '{Prediction.Decision(decision).label}'.", messages.SUCCESS)

    @admin.action(description="Review: confirmed, needs a doctor", permissions=["change"])
    def mark_confirmed(self, request, queryset):
        self._review_selected(request, queryset, Prediction.Decision.CONFIRMED)

    @admin.action(description="Review: dismissed, no doctor needed", permissions=["change"])
    def mark_dismissed(self, request, queryset):
        self._review_selected(request, queryset, Prediction.Decision.DISMISSED)

    @admin.action(description="Retry the prediction (those not assessed)", permissions=["change"])
    def retry(self, request, queryset):
        summary = services.retry_predictions(queryset)
        text = ", ".join(f"{count} {state}" for state, count in sorted(summary.items())) or "nothing to retry"
        self.message_user(request, f"Retried: {text}.", messages.INFO)


class PredictionInline(admin.StackedInline):
    model = Prediction
    fields = ["verdict_link", "status", "probability_malignant", "threshold", "model_version", "reviewed_at"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0

    @admin.display(description="prediction")
    def verdict_link(self, obj):
        return format_html(
            '<a href="{}">{} ({})</a>',
            reverse("admin:diagnosis_prediction_change", args=[obj.pk]),
            obj.get_outcome_display(),
            obj.review_state,
        )


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["id", "thumbnail_image", "patient_ref", "body_site", "verdict", "uploaded_by", "created_at"]
    list_display_links = ["id", "thumbnail_image"]
    list_filter = ["prediction__outcome", "body_site", "original_format", "created_at"]
    search_fields = ["patient_ref", "note"]
    date_hierarchy = "created_at"
    list_select_related = ["prediction", "uploaded_by"]
    inlines = [PredictionInline]
    fields = [
        "image_preview",
        "patient_ref",
        "body_site",
        "note",
        "uploaded_by",
        "created_at",
        "width",
        "height",
        "original_format",
        "original_size",
    ]
    # The clinician's description may be corrected; the image and its facts may not.
    readonly_fields = ["image_preview", "uploaded_by", "created_at", "width", "height", "original_format", "original_size"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="image")
    def thumbnail_image(self, obj):
        return thumbnail_tag(obj)

    @admin.display(description="image")
    def image_preview(self, obj):
        return format_html('<a href="{0}"><img src="{0}" alt="" style="max-width:480px;max-height:360px"></a>', obj.image.url)

    @admin.display(description="verdict", ordering="prediction__outcome")
    def verdict(self, obj):
        return obj.prediction.get_outcome_display()
