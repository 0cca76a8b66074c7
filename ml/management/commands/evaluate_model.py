"""manage.py evaluate_model DATASET: score any readable dataset with a saved model."""

import json
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import FORMATS, DatasetError, read_dataset
from ml.data.splits import held_out_of
from ml.reporting import metrics as evaluation
from ml.serving import tta
from ml.serving.classifier import ModelUnavailable, served_scores


def add_dataset_arguments(parser):
    """The arguments that say which images to score: evaluate_model's and compare_models'."""

    parser.add_argument(
        "datasets",
        nargs="+",
        metavar="DATASET",
        help="dataset folder(s) in any format ml.data.datasets reads; several are scored as one pooled set",
    )
    parser.add_argument("--format", choices=FORMATS, help="override the detected dataset format")
    parser.add_argument(
        "--split",
        choices=["all", "validation", "test"],
        default="all",
        help="score only the images held out as this split (the model's splits.json); a model that was not "
        "trained on a dataset held all of it out",
    )
    parser.add_argument(
        "--atypical-is-malignant",
        action="store_true",
        help="PH2: count atypical nevi as needing a doctor (the original challenge's convention)",
    )


def samples_to_score(datasets, data_format, atypical_is_malignant, model_dirs, split="all"):
    """(reports, samples, labels) of one or more datasets pooled, each narrowed to the images every model in
    model_dirs held out as `split` (ml.data.splits.held_out_of); a CommandError that says what is wrong
    otherwise."""

    reports, samples = [], []
    for dataset in datasets:
        try:
            report = read_dataset(dataset, data_format, atypical_is_malignant=atypical_is_malignant)
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        reports.append(report)
        these = list(report.samples)
        if split != "all":
            try:
                names = held_out_of(model_dirs, dataset, split, {s.path.name for s in these})
            except (FileNotFoundError, ValueError) as exc:
                raise CommandError(str(exc)) from exc
            if names is None:
                raise CommandError(
                    f"no model here was trained on {Path(dataset).name}, so it has no {split} split: all of it is "
                    "held out (leave out --split)"
                )
            these = [s for s in these if s.path.name in names]
            if not these:
                raise CommandError(f"none of {Path(dataset).name}'s images is in the model's {split} split")
        samples += these
    y = np.array([s.label for s in samples])
    if y.min() == y.max():
        raise CommandError("the images need both benign and malignant ones to be scored")
    return reports, samples, y


def scored_set(o, reports) -> dict:
    """What a result says of the images it scored: the datasets, their formats, the split and the labels' convention."""
    return {
        "dataset": " ".join(str(d) for d in o["datasets"]),
        "datasets": [str(d) for d in o["datasets"]],
        "format": "+".join(r.format for r in reports),
        "split": o["split"],
        "atypical_is_malignant": o["atypical_is_malignant"],
    }


def dataset_name(datasets, split: str) -> str:
    """How a scored set is named in the output: its folders' names, and the split."""
    return " + ".join(Path(d).name for d in datasets) + ("" if split == "all" else f" ({split})")


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Score a dataset with a saved model at its saved threshold and print AUC (with a bootstrap 95% interval), "
        "accuracy, sensitivity, specificity and calibration error."
    )

    def add_arguments(self, parser):
        add_dataset_arguments(parser)
        parser.add_argument("--model", help="model artifact folder (default: SKINCARE_MODEL_DIR)")
        parser.add_argument("--json", dest="json_path", help="also write the metrics to this JSON file")
        parser.add_argument(
            "--runtime",
            choices=["auto", "keras", "litert"],
            default="auto",
            help="which runtime scores the images (default: what serving uses)",
        )
        parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC interval")
        parser.add_argument(
            "--orientations",
            action="store_true",
            help="also score each image in the eight flips and quarter turns of the square and "
            "report how often the outcome changes with them (eight times the time)",
        )

    def handle(self, *args, **o):
        model_dir = Path(o["model"] or settings.SKINCARE_MODEL_DIR)
        reports, samples, y = samples_to_score(
            o["datasets"], o["format"], o["atypical_is_malignant"], [model_dir], o["split"]
        )
        self.stdout.write(f"scoring {len(samples)} images ({int(y.sum())} malignant) with {model_dir} ...")
        try:
            views = tta.ALL_VIEWS if o["orientations"] else tta.IDENTITY
            p_views, near_views, meta, checked = served_scores(
                [s.path for s in samples],
                directory=model_dir,
                runtime=None if o["runtime"] == "auto" else o["runtime"],
                orientations=views,
            )
        except ModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        p = p_views[:, 0]  # the image as it is
        result = evaluation.metrics(
            y, p, float(meta["threshold"]), n_boot=o["bootstrap"], uncertain_threshold=meta.get("uncertain_threshold")
        )
        margin = (meta.get("boundary_margin") or {}).get("logit")
        # The note is decided at first look; a model that checks close calls looks again at those.
        noted = near_views[:, 0] if checked else None
        if margin is not None:
            result["boundary_note"] = evaluation.boundary_notes(
                y, p, float(meta["threshold"]), meta.get("uncertain_threshold"), float(margin), noted=noted
            )
        if noted is not None:
            result["close_call_check"] = {
                "checked_in_eight_views": float(noted.mean()),
                "checked_in_some_orientation": float(near_views.any(axis=1).mean()),
                "malignant_checked": float(noted[y == 1].mean()),
            }
        if o["orientations"]:
            result["orientations"] = evaluation.orientation_consistency(
                y,
                p_views,
                float(meta["threshold"]),
                meta.get("uncertain_threshold"),
                views,
                boundary_margin=None if margin is None else float(margin),
                noted=noted,
            )
        result.update(scored_set(o, reports), model_version=meta.get("model_version"))
        by_detail = {}
        for detail in sorted({s.detail for s in samples}):
            mask = np.array([s.detail == detail for s in samples])
            by_detail[detail] = {
                "n": int(mask.sum()),
                "flagged": int((p[mask] >= result["threshold"]).sum()),
                "mean_probability": float(p[mask].mean()),
            }
        result["by_class"] = by_detail
        name = dataset_name(o["datasets"], o["split"])
        self.stdout.write(evaluation.format_table({name: result}))
        self.stdout.write(f"threshold {result['threshold']:.3f} (saved with model {result['model_version']})")
        for detail, row in by_detail.items():
            self.stdout.write(
                f"  {detail:>16}: {row['flagged']}/{row['n']} flagged, mean probability {row['mean_probability']:.3f}"
            )
        if "boundary_note" in result:
            b = result["boundary_note"]
            self.stdout.write(
                f"'close to a boundary' on {b['noted']:.3f} of the results; malignant called low risk: "
                f"{b['malignant_low_risk']}, {b['malignant_low_risk_noted']} of them with the note; benign low risk: "
                f"{b['benign_low_risk']}, {b['benign_low_risk_noted']} with it"
            )
        if "close_call_check" in result:
            c = result["close_call_check"]
            self.stdout.write(
                f"close calls checked again in all eight views: {c['checked_in_eight_views']:.3f} of the "
                f"images ({c['malignant_checked']:.3f} of the malignant)"
            )
        if o["orientations"]:
            r = result["orientations"]
            self.stdout.write(
                f"turned or flipped ({len(views)} views): the outcome changes for {r['outcome_changes']:.3f} of the images, "
                f"whether a doctor looks for {r['flag_changes']:.3f} ({r['malignant_flag_changes']:.3f} of the malignant); "
                f"malignant not flagged as is {r['malignant_not_flagged_as_is']:.3f}, in some view "
                f"{r['malignant_not_flagged_in_some_view']:.3f}; AUC by view {min(r['auc_by_view']):.3f} to "
                f"{max(r['auc_by_view']):.3f}"
            )
            if "noted" in r:

                def held(share):
                    return "none changed" if share is None else f"{share:.3f}"

                self.stdout.write(
                    f"'close to a boundary' (within {r['boundary_margin']:.3f} logits, fitted on validation): on "
                    f"{r['noted']:.3f} of the results, holding {held(r['outcome_changes_noted'])} of the outcome changes "
                    f"and {held(r['malignant_flag_changes_noted'])} of the malignant flag changes; "
                    f"{held(r['noted_outcome_changes'])} of the noted results change with the view"
                )
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result, indent=2))
            self.stdout.write(f"wrote {o['json_path']}")
