"""manage.py export_model [--model DIR]: the LiteRT export of a trained model (train_model does it too)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from ml.training.export import export_litert


class Command(BaseCommand):
    requires_system_checks = []
    help = "Export a trained model to LiteRT (model.tflite + head.npz) so serving needs no TensorFlow."

    def add_arguments(self, parser):
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")

    def handle(self, *args, **o):
        export_litert(Path(o["model"] or settings.SKINCARE_MODEL_DIR), log=self.stdout.write)
