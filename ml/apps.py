from django.apps import AppConfig


class MlConfig(AppConfig):
    """The model's side of the project: everything TensorFlow touches lives here.

    Importing this app must stay cheap: TensorFlow is imported only inside the
    functions that need it, so `manage.py check` and `migrate` never load it.
    """

    name = "ml"
    verbose_name = "Machine learning"
    default_auto_field = "django.db.models.BigAutoField"
