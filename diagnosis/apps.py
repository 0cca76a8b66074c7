from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    """The clinic's side: uploads, predictions, reviews. Knows nothing of Keras."""

    name = "diagnosis"
    verbose_name = "Diagnosis support"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from axes.signals import user_locked_out

        from . import audit, checks  # noqa: F401  (registers the system checks)

        user_locked_out.connect(audit.record_lockout, dispatch_uid="diagnosis.audit.record_lockout")
