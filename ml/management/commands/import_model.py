"""manage.py import_model RUN_DIR --dataset DATASET --output DIR: a served model from an accelerator run."""
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    requires_system_checks = []
    help = ("Load the weights of a run of `python -m ml.accelerated train` (by default the run with the best "
            "validation AUC), check its split is train_model's, then fit the image gate, export it for serving, "
            "calibrate it on the validation split as served and write its figures, as train_model does.")

    def add_arguments(self, parser):
        from ml.datasets import FORMATS

        parser.add_argument("run_dir", help="the folder that `python -m ml.accelerated train` wrote")
        parser.add_argument("--dataset", required=True, help="the dataset the bundle was prepared from")
        parser.add_argument("--output", required=True, help="the model folder to write")
        parser.add_argument("--run", help="the run to import (default: the best on validation)")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")

    def handle(self, *args, **o):
        from ml.accelerated import AcceleratedError, import_run
        from ml.datasets import DatasetError

        try:
            import_run(o["run_dir"], o["dataset"], o["output"], run=o["run"], data_format=o["format"],
                       log=self.stdout.write)
        except (AcceleratedError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
