from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    """The clinic's side: uploads, predictions, reviews. Knows nothing of Keras."""

    name = "diagnosis"
    verbose_name = "Diagnosis support"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
