"""Final diagnoses in the admin: a reviewer records or corrects one; the change goes
through final_diagnoses.record_final_diagnosis (audited), never straight to the table.
Nothing is deleted here. Imported by diagnosis/admin.py."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .audit import Via, events_for
from .final_diagnoses import may_record, record_final_diagnosis
from .final_diagnosis_forms import ChecksFinalDiagnosis
from .models import AuditEvent, FinalDiagnosis


class FinalDiagnosisAdminForm(ChecksFinalDiagnosis, forms.ModelForm):
    class Meta:
        model = FinalDiagnosis
        fields = ["lesion", "diagnosis", "method", "diagnosed_on", "comment"]


@admin.register(FinalDiagnosis)
class FinalDiagnosisAdmin(admin.ModelAdmin):
    """Who may: a reviewer (the permission to review predictions), as on the site."""

    form = FinalDiagnosisAdminForm
    list_display = ["lesion", "diagnosis", "method", "diagnosed_on", "recorded_by", "recorded_at", "site_link"]
    list_filter = ["diagnosis", "method", "diagnosed_on"]
    search_fields = ["lesion__patient_ref", "lesion__name", "comment"]
    date_hierarchy = "diagnosed_on"
    list_select_related = ["lesion", "recorded_by"]
    autocomplete_fields = ["lesion"]
    readonly_fields = ["recorded_by", "recorded_at", "site_link", "changes"]

    def get_readonly_fields(self, request, obj=None):
        # The lesion is chosen once; a wrong lesion's diagnosis is changed, not moved.
        return [*self.readonly_fields, "lesion"] if obj is not None else self.readonly_fields

    def has_view_permission(self, request, obj=None):
        return may_record(request.user) or super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return may_record(request.user)

    def has_change_permission(self, request, obj=None):
        return may_record(request.user)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_module_permission(self, request):
        return may_record(request.user) or super().has_module_permission(request)

    @admin.display(description="on the site")
    def site_link(self, obj):
        if obj is None or obj.lesion_id is None:
            return "-"
        return format_html(
            '<a href="{}">final diagnosis page</a>', reverse("diagnosis:final_diagnosis", args=[obj.lesion_id])
        )

    @admin.display(description="earlier versions (audit trail)")
    def changes(self, obj):
        if obj is None or obj.lesion_id is None:
            return "-"
        events = events_for(obj.lesion).filter(action=AuditEvent.Action.FINAL_DIAGNOSIS)
        lines = [
            f"{e.at:%Y-%m-%d %H:%M} {e.user.get_username() if e.user else 'system'}: "
            f"{(e.details.get('previous') or {}).get('diagnosis', '-')} -> {e.details.get('diagnosis')}"
            for e in events
        ]
        return "; ".join(lines) or "-"

    def save_model(self, request, obj, form, change):
        final = record_final_diagnosis(
            obj.lesion,
            recorded_by=request.user,
            via=Via.ADMIN,
            **{name: form.cleaned_data[name] for name in ("diagnosis", "method", "diagnosed_on", "comment")},
        )
        obj.pk, obj.recorded_by, obj.recorded_at = final.pk, final.recorded_by, final.recorded_at
