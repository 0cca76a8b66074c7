"""The upload form: the one place the upload's fields are validated.

The upload page and the JSON API both use it, so a photo refused on one is
refused on the other with the same words.
"""
from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from .images import accepted_mime_types, check_image
from .models import BodySite

# Pseudonymous: letters, digits and a few separators. A space, as in a name, is refused.
patient_ref_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
    "Use the pseudonymous patient reference (letters, digits, '-', '_', '.', '/'; no spaces), "
    "never the patient's name.",
    code="patient_ref",
)


class UploadForm(forms.Form):
    image = forms.FileField(
        label="Photo",
        help_text="A dermoscopic photo: JPEG, PNG, BMP or WebP.",
        error_messages={"required": "Choose a photo to upload."},
    )
    patient_ref = forms.CharField(
        label="Patient reference",
        required=False,
        max_length=64,
        validators=[patient_ref_validator],
        help_text="Optional. The pseudonymous reference, not the patient's name.",
    )
    body_site = forms.ChoiceField(label="Body site", required=False, choices=[("", "Not given")] + BodySite.choices)
    note = forms.CharField(label="Note", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].widget.attrs["accept"] = accepted_mime_types()

    def clean_image(self):
        # Replaces the uploaded file with the decoded, checked image.
        return check_image(self.cleaned_data["image"])
