"""manage.py compare_models DATASET --model A --model B: two models on the same images, paired."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ml.reporting import metrics as evaluation
from ml.serving.classifier import ModelUnavailable, predict_many

from .evaluate_model import add_dataset_arguments, dataset_name, samples_to_score, scored_set


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Score one dataset with two saved models and print B's AUC minus A's with a paired bootstrap 95% "
        "interval (each resample scores both models on the same images): whether a new model is worse than "
        "the shipped one, rather than each model's own interval."
    )

    def add_arguments(self, parser):
        add_dataset_arguments(parser)  # with --split, both models must have held out the same images
        parser.add_argument(
            "--model",
            dest="models",
            action="append",
            required=True,
            help="a model artifact folder; give it twice, A (say, the shipped one) then B",
        )
        parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
        parser.add_argument("--json", dest="json_path", help="also write the comparison to this JSON file")

    def handle(self, *args, **o):
        if len(o["models"]) != 2:
            raise CommandError(f"give --model exactly twice (A, then B), not {len(o['models'])} times")
        model_a, model_b = (Path(m) for m in o["models"])
        reports, samples, y = samples_to_score(
            o["datasets"], o["format"], o["atypical_is_malignant"], [model_a, model_b], o["split"]
        )
        self.stdout.write(
            f"{dataset_name(o['datasets'], o['split'])}: scoring {len(samples)} images ({int(y.sum())} malignant) with {model_a} and {model_b} ..."
        )
        scores, versions = [], []
        for model_dir in (model_a, model_b):
            try:
                p, meta = predict_many([s.path for s in samples], directory=model_dir)
            except ModelUnavailable as exc:
                raise CommandError(f"{model_dir}: {exc}") from exc
            scores.append(p)
            versions.append(meta.get("model_version"))
        result = evaluation.paired_auc_difference(y, scores[0], scores[1], n_boot=o["bootstrap"])
        result.update(
            scored_set(o, reports),
            model_a={"dir": str(model_a), "version": versions[0]},
            model_b={"dir": str(model_b), "version": versions[1]},
        )
        low, high = result["difference_ci95"]
        self.stdout.write(
            f"A {versions[0]}: AUC {result['auc_a']:.3f}\nB {versions[1]}: AUC {result['auc_b']:.3f}\n"
            f"B - A: {result['difference']:+.3f} (paired 95% interval {low:+.3f} to {high:+.3f}; "
            f"B below A in {result['share_of_resamples_b_below_a']:.3f} of {result['bootstrap']} resamples)"
        )
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result, indent=2))
            self.stdout.write(f"wrote {o['json_path']}")
