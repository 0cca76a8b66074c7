"""manage.py write_model_card [--model DIR]: MODEL_CARD.md from the evaluation JSON files."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from ml.reporting.model_card import write


class Command(BaseCommand):
    requires_system_checks = []
    help = "Write MODEL_CARD.md beside the model from metrics.json and evaluation/*.json (no figure typed by hand)."

    def add_arguments(self, parser):
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")

    def handle(self, *args, **o):
        path = write(Path(o["model"] or settings.SKINCARE_MODEL_DIR))
        self.stdout.write(f"wrote {path}")
