"""manage.py calibrate_model DATASET: choose a saved model's test-time views and refit its calibration
and thresholds on its own validation split, scored exactly as serving scores it."""
import datetime as dt
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    requires_system_checks = []
    help = ("Set which test-time views (ml/tta.py) a saved model averages, then refit its temperature, logit offset "
            "and outcome thresholds on the validation split it recorded (splits.json). Run it on the dataset the "
            "model was trained on; no other split is looked at.")

    def add_arguments(self, parser):
        from ml.datasets import FORMATS

        parser.add_argument("dataset", help="the dataset the model was trained on")
        parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")
        parser.add_argument("--views", choices=["all", "none"], default="all",
                            help="all: the eight flips and quarter turns of the square; none: the image as it is "
                                 "(default: %(default)s)")

    def handle(self, *args, **o):
        import numpy as np

        from ml import evaluation, tta
        from ml.classifier import METADATA_FILENAME, ModelUnavailable, predict_many, reset
        from ml.datasets import DatasetError, read_dataset
        from ml.splits import recorded_splits
        from ml.training import fit_calibration

        model_dir = Path(o["model"] or settings.SKINCARE_MODEL_DIR)
        meta_file = model_dir / METADATA_FILENAME
        if not meta_file.is_file():
            raise CommandError(f"{meta_file} not found: calibrate_model needs a model saved by train_model")
        try:
            wanted = recorded_splits(model_dir)["validation"]
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        meta = json.loads(meta_file.read_text())
        views = list(tta.ALL_VIEWS if o["views"] == "all" else tta.IDENTITY)
        counts = meta.get("data", {}).get("training_views", {})
        if not counts.get("n") or not 0 < counts.get("n_malignant", 0) < counts["n"]:
            raise CommandError(f"{meta_file}: no training class counts (data.training_views) to undo the training prior")
        try:
            report = read_dataset(o["dataset"], o["format"])
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        samples = [s for s in report.samples if s.path.name in wanted]
        if len(samples) != len(wanted):
            raise CommandError(f"{len(wanted) - len(samples)} of the model's {len(wanted)} validation images are not in "
                               f"{o['dataset']}: is it the dataset the model was trained on?")
        y = np.array([s.label for s in samples])

        # Raw scores with the new views: the calibration is reset so that predict_many returns them unchanged.
        scoring = dict(meta, tta_views=views, temperature=1.0, logit_offset=0.0)
        meta_file.write_text(json.dumps(scoring, indent=2))
        try:
            reset()
            self.stdout.write(f"scoring the {len(samples)} validation images ({int(y.sum())} malignant) "
                              f"in {len(views)} view(s) ...")
            raw, _ = predict_many([s.path for s in samples], directory=model_dir)
        except BaseException as exc:  # the metadata as it was, whatever stopped the scoring
            meta_file.write_text(json.dumps(meta, indent=2))
            if isinstance(exc, (ModelUnavailable, OSError, ValueError)):
                raise CommandError(str(exc)) from exc
            raise
        finally:
            reset()
        fitted = fit_calibration(y, raw, counts["n_malignant"] / counts["n"])
        before_auc = meta.get("calibration_fit", {}).get("validation_auc")
        meta.update(fitted)
        meta["tta_views"] = views
        meta["calibration_fit"] = {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": f"manage.py calibrate_model {o['dataset']} --views {o['views']}",
            "validation_n": len(samples), "validation_auc": evaluation.roc_auc(y, raw),
        }
        meta_file.write_text(json.dumps(meta, indent=2))
        self.stdout.write(
            f"validation AUC {meta['calibration_fit']['validation_auc']:.4f}"
            + (f" (before: {before_auc:.4f})" if before_auc is not None else "")
            + f"; temperature {fitted['temperature']:.3f}, logit offset {fitted['logit_offset']:.3f}, "
              f"threshold {fitted['threshold']:.4f}, uncertain from {fitted['uncertain_threshold']:.4f}; wrote {meta_file}")
