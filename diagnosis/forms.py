"""The upload form: the one place the upload's fields are validated.

The upload page and the JSON API both use it, so a photo refused on one is
refused on the other with the same words.
"""

from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from . import services
from .images import accepted_mime_types, check_image
from .models import BodySite, Lesion, MapView, Prediction
from .validators import no_bidi_controls, parse_id


class LesionChoiceField(forms.ModelChoiceField):
    """A lesion by id: anything that cannot be a database id (too large, negative, text)
    is "no such lesion", never a database error."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if parse_id(value) is None:
            raise forms.ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


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
    note = forms.CharField(
        label="Note",
        required=False,
        max_length=2000,
        validators=[no_bidi_controls],
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    lesion = LesionChoiceField(
        label="Lesion followed over time",
        queryset=Lesion.objects.all(),
        required=False,
        empty_label="Not followed, or a new lesion (name it below)",
        help_text="Optional. A lesion of this patient photographed before: this photo becomes its next visit.",
        error_messages={
            "invalid_choice": "There is no such lesion. Choose one of the patient's lesions, or name a new one."
        },
    )
    lesion_name = forms.CharField(
        label="…or name a new lesion",
        required=False,
        max_length=100,
        validators=[no_bidi_controls],
        help_text='Optional. Where it is, e.g. "left shoulder, upper". Needs the patient reference; '
        "an existing name of this patient picks that lesion.",
    )

    # The lesion's pin on the body map (the page's clickable outline fills these in).
    map_view = forms.ChoiceField(required=False, choices=[("", "")] + MapView.choices, widget=forms.HiddenInput)
    map_x = forms.FloatField(required=False, min_value=0, max_value=100, widget=forms.HiddenInput)
    map_y = forms.FloatField(required=False, min_value=0, max_value=215, widget=forms.HiddenInput)

    def __init__(self, *args, lesions_of: str | None = None, **kwargs):
        """For the page, `lesions_of` groups the list of lesions by patient, showing only
        this patient's when it is not empty (validation still accepts any lesion and says
        when it belongs to another patient). The API leaves it None: nothing is listed."""
        super().__init__(*args, **kwargs)
        self.fields["image"].widget.attrs["accept"] = accepted_mime_types()
        if lesions_of is not None:
            self.fields["lesion"].widget.choices = self.lesion_choices(lesions_of)

    def lesion_choices(self, patient_ref: str) -> list:
        """The lesions grouped by patient, for the page's list."""
        lesions = Lesion.objects.order_by("patient_ref", "name", "id")
        if patient_ref:
            lesions = lesions.filter(patient_ref=patient_ref)
        groups: dict[str, list] = {}
        for lesion in lesions:
            groups.setdefault(lesion.patient_ref, []).append((lesion.pk, lesion.name))
        return [("", self.fields["lesion"].empty_label), *groups.items()]

    def clean_image(self):
        # Replaces the uploaded file with the decoded, checked image.
        return check_image(self.cleaned_data["image"])

    def clean_lesion_name(self):
        return " ".join(self.cleaned_data["lesion_name"].split())

    def clean(self):
        cleaned = super().clean()
        lesion, name = cleaned.get("lesion"), cleaned.get("lesion_name", "")
        patient_ref = cleaned.get("patient_ref", "")
        if "patient_ref" not in cleaned:
            return cleaned  # its own error says what is wrong
        if lesion is not None:
            if name and name.lower() != lesion.name.lower():
                self.add_error("lesion_name", "Choose an existing lesion or name a new one, not both.")
            elif patient_ref and patient_ref != lesion.patient_ref:
                self.add_error(
                    "lesion", f"The lesion '{lesion.name}' belongs to patient {lesion.patient_ref}, not {patient_ref}."
                )
            else:
                cleaned["patient_ref"] = lesion.patient_ref
                cleaned["lesion_name"] = ""
        elif name and not patient_ref:
            self.add_error(
                "patient_ref", "A lesion followed over time belongs to a patient: give the patient reference."
            )
        self.clean_pin(cleaned)
        return cleaned

    def clean_pin(self, cleaned):
        """A pin marks a lesion, lies on the outline, and agrees with the body site (which it fills in)."""
        view, x, y = cleaned.get("map_view", ""), cleaned.get("map_x"), cleaned.get("map_y")
        lesion = cleaned.get("lesion")
        if lesion is None and cleaned.get("lesion_name") and cleaned.get("patient_ref"):
            # an existing lesion named again: its pin counts as if it had been chosen
            lesion = Lesion.objects.filter(
                patient_ref=cleaned["patient_ref"], name__iexact=cleaned["lesion_name"]
            ).first()
        try:
            if view or x is not None or y is not None:
                if lesion is None and not cleaned.get("lesion_name"):
                    raise forms.ValidationError(
                        "A pin on the body map marks a lesion followed over time: name the lesion too."
                    )
                pin_site = services.check_pin(view, x, y)
            elif lesion is not None and lesion.has_pin:
                pin_site = lesion.pin_site
            else:
                return
            cleaned["body_site"] = services.site_for_pin(pin_site, cleaned.get("body_site", ""))
        except forms.ValidationError as exc:
            self.add_error("body_site", exc)


class ReviewForm(forms.Form):
    """A reviewer's decision on the site (the admin has its own form, same rules)."""

    decision = forms.ChoiceField(
        label="Decision",
        choices=Prediction.Decision.choices,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose a decision."},
    )
    comment = forms.CharField(
        label="Comment",
        required=False,
        max_length=2000,
        validators=[no_bidi_controls],
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean(self):
        cleaned = super().clean()
        if "decision" in cleaned:
            try:
                services.check_review(cleaned["decision"], cleaned.get("comment", ""))
            except forms.ValidationError as exc:
                self.add_error("comment", exc)
        return cleaned


class PinForm(forms.Form):
    """Where a lesion is on the body map (the lesion page's form; the outline fills it in)."""

    view = forms.ChoiceField(
        choices=MapView.choices,
        widget=forms.HiddenInput,
        error_messages={"required": "Click on the body map to place the pin."},
    )
    x = forms.FloatField(
        min_value=0,
        max_value=100,
        widget=forms.HiddenInput,
        error_messages={"required": "Click on the body map to place the pin."},
    )
    y = forms.FloatField(
        min_value=0,
        max_value=215,
        widget=forms.HiddenInput,
        error_messages={"required": "Click on the body map to place the pin."},
    )
