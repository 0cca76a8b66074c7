"""manage.py average_models DATASET MODEL MODEL [...] --output DIR: one model from the average of several runs' weights."""
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    requires_system_checks = []
    help = ("Average the weights of models that train_model fine-tuned from the same start (runs that differ only in "
            "--finetune-seed, --finetune-epochs or --patience), then fit the image gate, export it for serving, "
            "calibrate it on the validation split as served and write its figures, as train_model does (ml/soup.py).")

    def add_arguments(self, parser):
        from ml.datasets import FORMATS

        parser.add_argument("dataset", help="the dataset the models were trained on")
        parser.add_argument("models", nargs="+", help="two or more model folders written by train_model")
        parser.add_argument("--output", required=True, help="the folder to write the averaged model to")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")

    def handle(self, *args, **o):
        from ml.datasets import DatasetError
        from ml.soup import SoupError, average_models

        try:
            average_models(o["dataset"], o["models"], o["output"], o["format"], log=self.stdout.write)
        except (SoupError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
