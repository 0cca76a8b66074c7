"""System checks: misconfiguration shows up in `manage.py check`, not at the first upload."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from ml.serving import classifier
from ml.serving.heatmap import HEATMAP_METHODS


@register()
def model_artifact_check(app_configs, **kwargs):
    """Warn (not fail) when there is no model: uploads are still stored, as not assessed."""
    try:
        classifier.read_metadata()  # reads metadata.json only; no TensorFlow
    except classifier.ModelUnavailable as exc:
        return [
            Warning(
                str(exc),
                hint="Uploads will be saved as 'not assessed' until a model is installed; then run "
                "`python manage.py retry_predictions`. Set SKINCARE_MODEL_DIR to use another model folder.",
                id="diagnosis.W001",
            )
        ]
    return []


@register(Tags.security)
def upload_limits_check(app_configs, **kwargs):
    errors = []
    for name in ("SKINCARE_MAX_UPLOAD_SIZE", "SKINCARE_MAX_IMAGE_PIXELS"):
        value = getattr(settings, name, None)
        if not isinstance(value, int) or value <= 0:
            errors.append(Error(f"{name} must be a positive whole number, not {value!r}.", id="diagnosis.E001"))
    allowed = set(getattr(settings, "SKINCARE_ALLOWED_IMAGE_FORMATS", []))
    if not allowed:
        errors.append(
            Error("SKINCARE_ALLOWED_IMAGE_FORMATS is empty: no upload could be accepted.", id="diagnosis.E002")
        )
    return errors


@register()
def evolution_rule_check(app_configs, **kwargs):
    rise = getattr(settings, "SKINCARE_EVOLUTION_MIN_RISE", None)
    if isinstance(rise, bool) or not isinstance(rise, (int, float)) or not 0 < rise <= 1:
        return [
            Error(
                f"SKINCARE_EVOLUTION_MIN_RISE must be a probability difference above 0 and at most 1, not {rise!r}.",
                hint="The default, 0.15, marks a rise of 15 percentage points since the previous visit.",
                id="diagnosis.E003",
            )
        ]
    return []


@register()
def heatmap_check(app_configs, **kwargs):
    method = classifier.heatmap_method()
    if method not in HEATMAP_METHODS:
        return [
            Error(
                f"SKINCARE_HEATMAP must be one of {', '.join(HEATMAP_METHODS)}, not {method!r}.",
                hint="gradcam (the default) is free; occlusion shows where the answer rests, at about 0.4 s more.",
                id="diagnosis.E004",
            )
        ]
    return []
