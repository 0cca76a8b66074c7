"""The final diagnosis form: the page and the JSON API both validate with it, so a
value refused on one is refused on the other with the same words."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from .final_diagnoses import check_final_diagnosis
from .models import FinalDiagnosis


class ChecksFinalDiagnosis:
    """The service's checks of a final diagnosis (check_final_diagnosis), as form errors: one place for
    the site's form, the API (which uses it) and the admin's."""

    def clean(self):
        cleaned = super().clean()
        if {"diagnosis", "method", "diagnosed_on"} <= set(cleaned):
            try:
                check_final_diagnosis(
                    diagnosis=cleaned["diagnosis"],
                    method=cleaned["method"],
                    diagnosed_on=cleaned["diagnosed_on"],
                    comment=cleaned.get("comment", ""),
                )
            except ValidationError as exc:
                raise forms.ValidationError(exc.messages) from exc
        return cleaned


class FinalDiagnosisForm(ChecksFinalDiagnosis, forms.Form):
    diagnosis = forms.ChoiceField(
        label="Final diagnosis",
        choices=[("", "Choose…"), *FinalDiagnosis.Diagnosis.choices],
        error_messages={
            "required": "Choose the final diagnosis.",
            "invalid_choice": "Unknown diagnosis %(value)r: choose one of the list.",
        },
    )
    method = forms.ChoiceField(
        label="How it was established",
        choices=FinalDiagnosis.Method.choices,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Say how the diagnosis was established.",
            "invalid_choice": "Unknown way of establishing it %(value)r: choose one of the list.",
        },
    )
    diagnosed_on = forms.DateField(
        label="Date of the diagnosis",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The date of the histopathology report, of the dermatologist's diagnosis, or of the last "
        "follow-up visit.",
        error_messages={
            "required": "Give the date of the diagnosis.",
            "invalid": "Give the date of the diagnosis as YYYY-MM-DD.",
        },
    )
    comment = forms.CharField(
        label="Comment", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
