"""manage.py prepare_dataset SRC DEST: any known dataset -> the original project's four folders."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import FORMATS, DatasetError, read_dataset
from ml.data.folders import write_split_folders


class Command(BaseCommand):
    help = (
        "Read a dataset in any known format (original, ham10000, ph2, folders) and write "
        "benign_train/ malign_train/ benign_test/ malign_test/ of 224x224 RGB JPEGs to DEST, "
        "split by lesion and stratified by label. Prints what was read, dropped and written."
    )

    def add_arguments(self, parser):
        parser.add_argument("src", help="dataset folder")
        parser.add_argument("dest", help="output folder (must be empty unless --force)")
        parser.add_argument("--format", choices=FORMATS, help="dataset format (default: detected from SRC)")
        parser.add_argument(
            "--test-fraction", type=float, default=0.2, help="share of each class in the test folders (default 0.2)"
        )
        parser.add_argument("--seed", type=int, default=42, help="seed of the split (default 42)")
        parser.add_argument(
            "--atypical-is-malignant",
            action="store_true",
            help="PH2: count atypical nevi as malignant (default: only melanoma)",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="write into a non-empty DEST, replacing its four class folders and manifest.csv",
        )

    def handle(self, *args, **options):
        try:
            report = read_dataset(
                options["src"], options["format"], atypical_is_malignant=options["atypical_is_malignant"]
            )
            self.stdout.write(report.summary())
            prepared = write_split_folders(
                report,
                options["dest"],
                test_fraction=options["test_fraction"],
                seed=options["seed"],
                force=options["force"],
                progress=lambda done, total: self.stdout.write(f"  {done}/{total} images written"),
            )
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(prepared.summary())
        if prepared.skipped:
            self.stderr.write(f"{len(prepared.skipped)} image(s) could not be read and were left out (listed above)")
