"""manage.py calibrate_model DATASET: choose a saved model's test-time views and refit its calibration
and thresholds on its own validation split, scored exactly as serving scores it."""

import json
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.artifact import METADATA_FILENAME, METRICS_FILENAME
from ml.data.datasets import FORMATS, DatasetError, read_dataset
from ml.data.splits import held_out, recorded_splits
from ml.serving import tta
from ml.serving.classifier import ModelUnavailable, reset
from ml.training.calibration import calibrate_and_report, training_prior
from ml.training.trainer import source_of


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Set which test-time views (ml/serving/tta.py) a saved model averages, then refit its temperature, logit offset "
        "and outcome thresholds on the validation split it recorded (splits.json), scored as serving scores, and "
        "rewrite metrics.json and the plots from the same scores (the test split is scored there, never used to "
        "choose). Run it on the dataset the model was trained on."
    )

    def add_arguments(self, parser):
        parser.add_argument("datasets", nargs="+", metavar="DATASET", help="the dataset(s) the model was trained on")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")
        parser.add_argument(
            "--views",
            choices=["all", "close-calls", "none"],
            default="all",
            help="all: the eight flips and quarter turns of the square, always; close-calls: the "
            "image as it is, and the eight views where that first look is close to an outcome "
            "boundary (ml/serving/tta.py); none: the image as it is (default: %(default)s)",
        )

    def handle(self, *args, **o):
        model_dir = Path(o["model"] or settings.SKINCARE_MODEL_DIR)
        meta_file, metrics_file = model_dir / METADATA_FILENAME, model_dir / METRICS_FILENAME
        if not meta_file.is_file():
            raise CommandError(f"{meta_file} not found: calibrate_model needs a model saved by train_model")
        try:
            held = recorded_splits(model_dir)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        meta_text = meta_file.read_text()
        metrics_text = metrics_file.read_text() if metrics_file.is_file() else None
        meta = json.loads(meta_text)
        views = list(tta.ALL_VIEWS if o["views"] == "all" else tta.IDENTITY)
        try:
            prior = training_prior(meta)
        except ValueError as exc:
            raise CommandError(f"{meta_file}: {exc}") from exc
        try:
            samples = [s for d in o["datasets"] for s in read_dataset(d, o["format"]).samples]
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        _, val, test = held_out(samples, held)
        if len(val) != len(held["validation"]):
            raise CommandError(
                f"{len(held['validation']) - len(val)} of the model's {len(held['validation'])} "
                f"validation images are not in {', '.join(o['datasets'])}: are these the datasets the model was trained on?"
            )
        y_val, y_test = np.array([s.label for s in val]), np.array([s.label for s in test])
        before_auc = meta.get("calibration_fit", {}).get("validation_auc")

        # The close-call check is fitted again below, for the views chosen (a model averaging all eight has none).
        unchecked = {key: value for key, value in meta.items() if key != tta.CLOSE_CALL_KEY}
        meta_file.write_text(json.dumps(dict(unchecked, tta_views=views), indent=2))
        self.stdout.write(
            f"scoring the {len(val)} validation images ({int(y_val.sum())} malignant), then the "
            f"{len(test)} test images, in {len(views)} view(s) ..."
        )
        try:
            reset()
            results = calibrate_and_report(
                model_dir,
                y_val,
                [s.path for s in val],
                prior,
                fitted_by=f"manage.py calibrate_model {' '.join(o['datasets'])} --views {o['views']}",
                y_test=y_test,
                test_images=[s.path for s in test],
                val_sources=[source_of(s) for s in val],
                test_sources=[source_of(s) for s in test],
                results={
                    k: v
                    for k, v in json.loads(metrics_text or "{}").items()
                    if k not in ("validation", "test", "scored_with", "validation_by_source", "test_by_source")
                },
                log=self.stdout.write,
                close_calls=o["views"] == "close-calls",
            )
        except BaseException as exc:  # the metadata and metrics as they were, whatever stopped the scoring
            meta_file.write_text(meta_text)
            if metrics_text is not None:
                metrics_file.write_text(metrics_text)
            if isinstance(exc, (ModelUnavailable, OSError, ValueError)):
                raise CommandError(str(exc)) from exc
            raise
        finally:
            reset()
        fit = json.loads(meta_file.read_text())["calibration_fit"]
        self.stdout.write(
            f"validation AUC {fit['validation_auc']:.4f}"
            + (f" (before: {before_auc:.4f})" if before_auc is not None else "")
            + f"; wrote {meta_file} and {metrics_file} (validation and test rows, plots)"
            + ("" if "test" in results else " (validation only: no test split)")
        )
