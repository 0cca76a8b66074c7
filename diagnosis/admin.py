"""The reviewer's side, in the Django admin.

What the model said (with its heat map) is shown read-only; a reviewer writes only
the decision and the comment, through services.record_review, which also records
who and when. Nothing is added or deleted here: uploads come through the upload
page or the API, and the history is kept. The audit trail is read-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import erasure, services
from .audit import Via, events_for
from .models import AuditEvent, Lesion, Prediction, Upload


def thumbnail_tag(upload: Upload, size: int = 64):
    if not upload.thumbnail:
        return "-"
    return format_html(
        '<img src="{}" alt="" style="width:{}px;height:auto;border-radius:4px">', upload.thumbnail.url, size
    )


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
    """The reviewer's work lists, one click from the change list. The review queue
    is the site's /queue/ page: needs a doctor or uncertain, not yet reviewed, oldest first."""

    title = "work list"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [
            ("review", "Review queue: needs a doctor or uncertain, not yet reviewed (oldest first)"),
            ("not_assessed", "Not assessed, can be retried"),
            ("refused", "Refused by the image check"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "review":
            return queryset.filter(outcome__in=Prediction.QUEUE_OUTCOMES, reviewed_at__isnull=True)
        if self.value() == "not_assessed":
            return queryset.filter(status__in=Prediction.RETRYABLE)
        if self.value() == "refused":
            return queryset.filter(status=Prediction.Status.REFUSED)
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


# What the model said, as a person reads it: numbers rounded (display methods below), the image
# check's measures as a table; the stored values are the model's, unrounded.
# The upload as the clinician made it: shown first, never edited in the admin.
UPLOAD_FIELDS = ["photo_and_heatmap", "upload_link", "patient_ref", "lesion", "body_site", "note", "uploaded_by"]
PREDICTION_FIELDS = [
    "status",
    "reason",
    "outcome",
    "label",
    "score",
    "needs_doctor_from",
    "uncertain_from",
    "near_boundary",
    "views_averaged",
    "model_version",
    "prediction_time",
    "predicted_at",
    "attempts",
    "created_at",
    "image_check",
]


def rounded(value, places: int = 3) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def image_tag(url: str, alt: str = ""):
    return format_html('<a href="{0}"><img src="{0}" alt="{1}" style="max-width:480px;max-height:360px"></a>', url, alt)


class NoAddOrDeleteAdmin(admin.ModelAdmin):
    """Records come from uploads and the model, never typed into the admin, and nothing is deleted."""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Prediction)
class PredictionAdmin(NoAddOrDeleteAdmin):
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
        "lesion",
        "uploaded_by",
        "created_at",
    ]
    list_display_links = ["id", "thumbnail_image"]
    list_filter = [
        QueueFilter,
        "outcome",
        "near_boundary",
        ReviewedFilter,
        "review_decision",
        "status",
        "model_version",
        "created_at",
    ]
    search_fields = ["upload__patient_ref", "upload__note", "upload__lesion__name", "review_comment"]
    date_hierarchy = "created_at"
    list_select_related = ["upload", "upload__uploaded_by", "upload__lesion", "reviewed_by"]
    list_per_page = 50
    actions = ["mark_confirmed", "mark_dismissed", "retry", "erase_patients"]
    fieldsets = [
        (
            "Upload",
            {"fields": UPLOAD_FIELDS},
        ),
        ("What the model said (read-only)", {"fields": PREDICTION_FIELDS}),
        ("Review", {"fields": ["review_decision", "review_comment", "reviewed_by", "reviewed_at"]}),
        ("Audit trail (read-only)", {"fields": ["audit_trail"], "classes": ["collapse"]}),
    ]
    readonly_fields = [
        *UPLOAD_FIELDS,
        *PREDICTION_FIELDS,
        "reviewed_by",
        "reviewed_at",
        "audit_trail",
    ]

    @admin.display(description="image")
    def thumbnail_image(self, obj):
        return thumbnail_tag(obj.upload)

    @admin.display(description="who did what, when")
    def audit_trail(self, obj):
        events = list(events_for(obj))
        if not events:
            return "-"
        rows = (
            (
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                e.user.get_username() if e.user else "system",
                e.get_action_display(),
                e.get_via_display(),
            )
            for e in events
        )
        return format_html_join(mark_safe("<br>"), "{} · {} · {} ({})", rows)

    def get_ordering(self, request):
        # The review queue is worked oldest first; everything else newest first.
        if request.GET.get(QueueFilter.parameter_name) == "review":
            return ["upload__created_at", "id"]
        return super().get_ordering(request)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            prediction = self.get_object(request, object_id)
            if prediction is not None:
                services.note_viewed(request.user, prediction, via=Via.ADMIN)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="photo and heat map")
    def photo_and_heatmap(self, obj):
        """The photo with its heat map beside it, where the model drew one."""
        photo = image_tag(obj.upload.image.url, f"photo {obj.pk}")
        if not obj.heatmap:
            return photo
        return format_html(
            '<div style="display:flex;gap:1rem;flex-wrap:wrap">{}{}</div>',
            photo,
            image_tag(obj.heatmap.url, f"{obj.heatmap_name} of photo {obj.pk}"),
        )

    @admin.display(description="score (probability of malignancy)")
    def score(self, obj):
        return rounded(obj.probability_malignant)

    @admin.display(description="needs a doctor from")
    def needs_doctor_from(self, obj):
        return rounded(obj.threshold)

    @admin.display(description="uncertain from")
    def uncertain_from(self, obj):
        return rounded(obj.uncertain_threshold)

    @admin.display(description="prediction time")
    def prediction_time(self, obj):
        return "-" if obj.elapsed_ms is None else f"{obj.elapsed_ms:.0f} ms"

    @admin.display(description="image check measures")
    def image_check(self, obj):
        if not obj.gate_measures:
            return "-"
        return render_to_string("diagnosis/_measures.html", {"measures": obj.gate_measures})

    @admin.display(description="lesion", ordering="upload__lesion__name")
    def lesion(self, obj):
        lesion = obj.upload.lesion
        if lesion is None:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("diagnosis:lesion", args=[lesion.pk]), lesion.name)

    @admin.display(description="upload")
    def upload_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:diagnosis_upload_change", args=[obj.upload_id]), obj.upload
        )

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
                via=Via.ADMIN,
            )

    def _review_selected(self, request, queryset, decision):
        count = services.review_many(queryset, reviewer=request.user, decision=decision, via=Via.ADMIN)
        self.message_user(
            request, f"{count} prediction(s) marked '{Prediction.Decision(decision).label}'.", messages.SUCCESS
        )

    @admin.action(description="Review: confirmed, needs a doctor", permissions=["change"])
    def mark_confirmed(self, request, queryset):
        self._review_selected(request, queryset, Prediction.Decision.CONFIRMED)

    @admin.action(description="Review: dismissed, no doctor needed", permissions=["change"])
    def mark_dismissed(self, request, queryset):
        self._review_selected(request, queryset, Prediction.Decision.DISMISSED)

    @admin.action(description="Retry the prediction (those not assessed)", permissions=["change"])
    def retry(self, request, queryset):
        summary = services.retry_predictions(queryset, user=request.user, via=Via.ADMIN)
        text = ", ".join(f"{count} {state}" for state, count in sorted(summary.items())) or "nothing to retry"
        self.message_user(request, f"Retried: {text}.", messages.INFO)

    @admin.action(description="Erase these patients' data (on request; cannot be undone)", permissions=["change"])
    def erase_patients(self, request, queryset):
        """A patient's right to erasure: after a confirmation page, every prediction, upload,
        lesion and file of the selected predictions' patients is deleted (diagnosis/erasure.py)."""
        if request.POST.get("confirm") != "yes":
            refs = sorted({p.upload.patient_ref for p in queryset.select_related("upload")} - {""})
            return TemplateResponse(
                request,
                "admin/diagnosis/erase_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Erase patients' data",
                    "patient_refs": refs,
                    "without_ref": queryset.filter(upload__patient_ref="").count(),
                    "selected": queryset.values_list("pk", flat=True),
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                    "opts": self.model._meta,
                },
            )
        results = erasure.erase_predictions(queryset, user=request.user, via=Via.ADMIN)
        predictions = sum(r.predictions for r in results)
        files = sum(r.files for r in results)
        self.message_user(
            request,
            f"Erased: {predictions} prediction(s) and {files} file(s). The audit trail "
            "records the erasure without the deleted content.",
            messages.SUCCESS,
        )
        return None


class PredictionInline(admin.StackedInline):
    model = Prediction
    fields = ["verdict_link", "status", "score", "needs_doctor_from", "model_version", "reviewed_at"]
    readonly_fields = fields

    @admin.display(description="score (probability of malignancy)")
    def score(self, obj):
        return rounded(obj.probability_malignant)

    @admin.display(description="needs a doctor from")
    def needs_doctor_from(self, obj):
        return rounded(obj.threshold)

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


class UploadForm(forms.ModelForm):
    """A photo of a pinned lesion keeps the pin's body site (the body map decides it)."""

    def clean(self):
        cleaned = super().clean()
        lesion = self.instance.lesion
        if lesion is not None and lesion.has_pin and "body_site" in cleaned:
            try:
                cleaned["body_site"] = services.site_for_pin(lesion.pin_site, cleaned["body_site"])
            except ValidationError as exc:
                self.add_error("body_site", exc)
        return cleaned


@admin.register(Upload)
class UploadAdmin(NoAddOrDeleteAdmin):
    form = UploadForm
    list_display = [
        "id",
        "thumbnail_image",
        "patient_ref",
        "lesion",
        "body_site",
        "verdict",
        "uploaded_by",
        "created_at",
    ]
    list_display_links = ["id", "thumbnail_image"]
    list_filter = ["prediction__outcome", "body_site", "original_format", "created_at"]
    search_fields = ["patient_ref", "note", "lesion__name"]
    date_hierarchy = "created_at"
    list_select_related = ["prediction", "uploaded_by", "lesion"]
    inlines = [PredictionInline]
    fields = [
        "image_preview",
        "patient_ref",
        "lesion",
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
    readonly_fields = [
        "image_preview",
        "lesion",
        "uploaded_by",
        "created_at",
        "width",
        "height",
        "original_format",
        "original_size",
    ]

    @admin.display(description="image")
    def thumbnail_image(self, obj):
        return thumbnail_tag(obj)

    @admin.display(description="image")
    def image_preview(self, obj):
        return image_tag(obj.image.url)

    @admin.display(description="verdict", ordering="prediction__outcome")
    def verdict(self, obj):
        return obj.prediction.get_outcome_display()


@admin.register(Lesion)
class LesionAdmin(NoAddOrDeleteAdmin):
    """Lesions followed over time. Only the name may be corrected; the photos stay theirs."""

    list_display = ["id", "patient_ref", "name", "pin", "visits", "created_by", "created_at", "site_link"]
    search_fields = ["patient_ref", "name"]
    fields = ["patient_ref", "name", "pin", "created_by", "created_at", "site_link"]
    readonly_fields = ["patient_ref", "pin", "created_by", "created_at", "site_link"]

    @admin.display(description="body map pin")
    def pin(self, obj):
        return obj.pin_description or "-"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(visit_count=Count("uploads"))

    @admin.display(description="photos", ordering="visit_count")
    def visits(self, obj):
        return obj.visit_count

    @admin.display(description="on the site")
    def site_link(self, obj):
        return format_html('<a href="{}">photos side by side</a>', reverse("diagnosis:lesion", args=[obj.pk]))


@admin.register(AuditEvent)
class AuditEventAdmin(NoAddOrDeleteAdmin):
    """The audit trail, read-only: nobody adds, changes or deletes an event here."""

    list_display = ["at", "user", "action", "object_link", "via", "details_text"]
    list_filter = ["action", "via", "at", "content_type"]
    search_fields = ["object_repr", "user__username"]
    date_hierarchy = "at"
    list_select_related = ["user", "content_type"]
    fields = ["at", "user", "action", "via", "content_type", "object_id", "object_link", "details_text"]
    readonly_fields = fields

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, obj):
        if obj.content_type_id is None:
            return obj.object_repr or "-"
        try:
            url = reverse(f"admin:{obj.content_type.app_label}_{obj.content_type.model}_change", args=[obj.object_id])
        except NoReverseMatch:
            return obj.object_repr
        return format_html('<a href="{}">{}</a>', url, obj.object_repr)

    @admin.display(description="details")
    def details_text(self, obj):
        def plain(value):
            return f"{value:.3f}" if isinstance(value, float) else value

        return (
            ", ".join(f"{key}: {plain(value)}" for key, value in obj.details.items() if value not in (None, "")) or "-"
        )


from . import admin_final_diagnosis  # noqa: E402,F401  (registers FinalDiagnosisAdmin)
