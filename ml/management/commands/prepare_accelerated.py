"""manage.py prepare_accelerated DATASET --output DIR: the split and images a GPU run trains on."""

from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import FORMATS, DatasetError
from ml.training.gpu import prepare_bundle
from ml.training.remote import BundleError


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Write train_model's split of DATASET (same seed, same code) as manifest.json, with the training and "
        "validation images copied beside it in parts, for ml/gpu_train.sh on a machine without TensorFlow. "
        "The test images are not copied."
    )

    def add_arguments(self, parser):
        parser.add_argument("datasets", nargs="+", metavar="DATASET")
        parser.add_argument("--output", required=True, help="the bundle folder (emptied first); keep it out of git")
        parser.add_argument("--parts", type=int, default=2, help="how many folders to spread the images over")
        parser.add_argument("--seed", type=int, default=42, help="the split's seed (train_model's --seed)")
        parser.add_argument("--limit", type=int, help="a stratified subset of this many images (train_model's --limit)")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")

    def handle(self, *args, **o):
        if o["parts"] < 1:
            raise CommandError("--parts must be at least 1")
        try:
            prepare_bundle(
                o["datasets"],
                o["output"],
                seed=o["seed"],
                parts=o["parts"],
                data_format=o["format"],
                limit=o["limit"],
                log=self.stdout.write,
            )
        except (BundleError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
