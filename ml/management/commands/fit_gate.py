"""manage.py fit_gate DATASET --model DIR: (re)fit a saved model's image gate."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import DatasetError, read_dataset
from ml.data.splits import held_out, recorded_splits
from ml.serving.gate import STATISTICS
from ml.training.gate_fitting import GATE_STATISTICS, fit_for_model, resplit_model
from ml.training.trainer import source_of


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Fit the image gate (exposure, sharpness and feature-distance limits) of a saved model on the images "
        "it was trained on (the reference shared among the sources); the limits are chosen on its validation split "
        "(splits.json) so that none of its malignant images is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("datasets", nargs="+", metavar="DATASET", help="the dataset(s) the model was trained on")
        parser.add_argument("--format", help="override the detected dataset format")
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")
        parser.add_argument(
            "--split-block",
            type=int,
            help="first split the saved network at this block, so the gate reads the map where block N - 1 ends "
            "(same weights, same scores; the LiteRT export is written again)",
        )
        parser.add_argument(
            "--statistics",
            choices=STATISTICS,
            default=GATE_STATISTICS,
            help="of that map: per-channel mean, or mean and spread (default: %(default)s)",
        )

    def handle(self, *args, **o):
        model_dir = Path(o["model"] or settings.SKINCARE_MODEL_DIR)
        try:
            held = recorded_splits(model_dir)
        except FileNotFoundError as exc:
            raise CommandError(f"{exc}; the gate needs to know which images were held out") from exc
        try:
            samples = [s for d in o["datasets"] for s in read_dataset(d, o["format"]).samples]
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        train, val, _ = held_out(samples, held)
        if not train or not val:
            raise CommandError("no training or validation images of this model found in that dataset")
        if o["split_block"] is not None:
            try:
                resplit_model(model_dir, o["split_block"], log=self.stdout.write)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        limits = fit_for_model(
            model_dir,
            [s.path for s in train],
            [s.path for s in val],
            log=self.stdout.write,
            train_sources=[source_of(s) for s in train],
            val_labels=[s.label for s in val],
            statistics=o["statistics"],
            val_sources=[source_of(s) for s in val],
        )
        if o["split_block"] is not None:
            from ml.training.export import export_litert

            export_litert(model_dir, log=self.stdout.write)
        self.stdout.write(json.dumps(limits, indent=2))
