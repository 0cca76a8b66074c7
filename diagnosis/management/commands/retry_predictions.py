"""Assess again the uploads the model could not assess (no model, failed, or interrupted)."""

from django.core.management.base import BaseCommand

from diagnosis import services
from diagnosis.models import Prediction


class Command(BaseCommand):
    help = (
        "Run the model again for predictions that are not done (no model available, failed, "
        "or interrupted). Done predictions are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Only these prediction ids (default: every one not done).")

    def handle(self, *args, ids, **options):
        predictions = Prediction.objects.filter(status__in=Prediction.RETRYABLE).order_by("created_at", "id")
        if ids:
            predictions = predictions.filter(pk__in=ids)
        total = predictions.count()
        if not total:
            self.stdout.write("Nothing to retry: every prediction is done.")
            return
        self.stdout.write(f"Retrying {total} prediction(s)...")
        summary = services.retry_predictions(predictions)
        labels = dict(Prediction.Status.choices)
        for state, count in sorted(summary.items()):
            self.stdout.write(f"  {labels.get(state, state)}: {count}")
        if summary.get(Prediction.Status.DONE, 0) == total:
            self.stdout.write(self.style.SUCCESS("All assessed."))
        else:
            self.stdout.write(self.style.WARNING("Some remain not assessed; see their status in the admin."))
