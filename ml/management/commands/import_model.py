"""manage.py import_model RUN_DIR --dataset DATASET --output DIR: a served model from a GPU run."""

from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import FORMATS, DatasetError
from ml.training.gpu import import_run
from ml.training.remote import BundleError


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Load the weights of a GPU run (ml/gpu_train.sh), check its split is train_model's, then fit the image "
        "gate, export it for serving, calibrate it on the validation split as served and write its figures, "
        "as train_model does."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_dir", help="the folder that ml/gpu_train.sh wrote")
        parser.add_argument("--dataset", required=True, nargs="+", help="the dataset(s) the bundle was prepared from")
        parser.add_argument("--output", required=True, help="the model folder to write")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")

    def handle(self, *args, **o):
        try:
            import_run(o["run_dir"], o["dataset"], o["output"], data_format=o["format"], log=self.stdout.write)
        except (BundleError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
