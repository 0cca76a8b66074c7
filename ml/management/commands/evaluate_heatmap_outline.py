"""manage.py evaluate_heatmap_outline: where each heat map lands on images without lesion masks.

The lesion is outlined from the image itself (ml/reporting/outlines.py), so any dataset's validation
split can say which heat map (ml/serving/heatmap.py) follows the lesion, without looking at PH2's masks,
which are a test set's. Both maps are drawn as serving draws them, for the image as it is."""

import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from ml import preprocessing
from ml.management.commands.evaluate_model import add_dataset_arguments, samples_to_score
from ml.reporting.outlines import dark_lesion_outline
from ml.serving.classifier import LoadedModel, ModelUnavailable, model_dir, outcome_for
from ml.serving.heatmap import HEATMAP_METHODS, heat_share_inside

MELANOMA = {"mel", "melanoma"}


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Over a dataset's images (e.g. the model's validation split), the share of each heat map's heat inside the "
        "lesion as outlined from the image (Otsu), beside the outline's share of the image, and each map's heat "
        "in its bottom row by outcome. Every malignant image, and every Nth benign one."
    )

    def add_arguments(self, parser):
        add_dataset_arguments(parser)
        parser.add_argument("--model", help="model folder (default: the served one)")
        parser.add_argument("--benign-every", type=int, default=4, help="score every Nth benign image (default 4)")
        parser.add_argument("--limit", type=int, help="only the first N of those images")
        parser.add_argument("--json", dest="json_path")

    def handle(self, *args, **o):
        directory = Path(o["model"]) if o["model"] else model_dir()
        try:
            loaded = LoadedModel(directory)
        except ModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        _reports, samples, y = samples_to_score(
            o["datasets"], o["format"], o["atypical_is_malignant"], [directory], o["split"]
        )
        if o["benign_every"] < 1:
            raise CommandError("--benign-every must be 1 or more")
        benign = [i for i in range(len(samples)) if not y[i]][:: o["benign_every"]]
        chosen = sorted([i for i in range(len(samples)) if y[i]] + benign)[: o["limit"]]
        meta = loaded.metadata
        rows = []
        for i in chosen:
            s = samples[i]
            x = preprocessing.preprocess(s.path, loaded.image_size)
            raw, _features, cam = loaded.analyse(x[None])
            probability, _near, _views, cam = loaded.settle(x, float(raw[0]), None if cam is None else cam[0])
            outline = dark_lesion_outline(x)
            row = {
                "image": s.path.name,
                "malignant": bool(y[i]),
                "diagnosis": s.detail,
                "outcome": outcome_for(probability, meta["threshold"], meta.get("uncertain_threshold")),
                "outline_share": None if outline is None else float(outline.mean()),
            }
            for method in HEATMAP_METHODS:
                heat = loaded.heat_map(x, float(raw[0]), cam, method)
                heat = np.zeros((1, 1), np.float32) if heat is None else np.asarray(heat, np.float32)
                row[method] = {
                    "inside": None if outline is None else heat_share_inside(heat, outline),
                    "bottom_row": float(heat[-1].sum() / heat.sum()) if heat.sum() > 0 else None,
                }
            rows.append(row)

        def mean(values):
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        def placement(group):
            outlined = [r for r in group if r["outline_share"] is not None]
            return {
                "n": len(group),
                "outlined": len(outlined),
                "outline_share": mean(r["outline_share"] for r in outlined),
                **{m: mean(r[m]["inside"] for r in outlined) for m in HEATMAP_METHODS},
            }

        groups = {
            "malignant": [r for r in rows if r["malignant"]],
            "melanoma": [r for r in rows if r["malignant"] and str(r["diagnosis"]).lower() in MELANOMA],
            "benign": [r for r in rows if not r["malignant"]],
        }
        result = {
            "model_version": meta.get("model_version"),
            "runtime": loaded.runtime.name,
            "datasets": [Path(d).name for d in o["datasets"]],
            "split": o["split"],
            "benign_every": o["benign_every"],
            "heat_inside_outline": {k: placement(v) for k, v in groups.items()},
            "bottom_row_by_outcome": {
                outcome: {
                    "n": sum(r["outcome"] == outcome for r in rows),
                    **{m: mean(r[m]["bottom_row"] for r in rows if r["outcome"] == outcome) for m in HEATMAP_METHODS},
                    "empty": {
                        m: sum(r[m]["bottom_row"] is None for r in rows if r["outcome"] == outcome)
                        for m in HEATMAP_METHODS
                    },
                }
                for outcome in sorted({r["outcome"] for r in rows})
            },
        }
        for name, p in result["heat_inside_outline"].items():
            self.stdout.write(
                f"{name:>10}: {p['outlined']} of {p['n']} outlined, outline {_f(p['outline_share'])} of the image; "
                + ", ".join(f"{m} {_f(p[m])} inside" for m in HEATMAP_METHODS)
            )
        for outcome, b in result["bottom_row_by_outcome"].items():
            self.stdout.write(
                f"{outcome:>12}: {b['n']} images; bottom row "
                + ", ".join(f"{m} {_f(b[m])} ({b['empty'][m]} empty)" for m in HEATMAP_METHODS)
            )
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result, indent=2))


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"
