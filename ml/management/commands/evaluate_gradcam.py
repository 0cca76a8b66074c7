"""manage.py evaluate_gradcam: does the heat map land on the lesion? Checked on PH2's lesion masks."""

import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from ml import preprocessing
from ml.data.datasets import read_dataset, shared_datasets_root
from ml.serving.classifier import get_model, heatmap_method, outcome_for
from ml.serving.heatmap import heat_inside_mask


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Over the PH2 images, the share of the served heat map (Grad-CAM, or occlusion with SKINCARE_HEATMAP=occlusion) "
        "that falls inside the dermatologists' lesion outline, "
        "beside the lesion's share of the image and the share of the layer's class-agnostic activity inside it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--datasets", help="the shared datasets folder (default: $SKINCARE_DATASETS or ../shared/datasets)"
        )
        parser.add_argument("--limit", type=int, help="only the first N images")
        parser.add_argument("--json", dest="json_path")

    def handle(self, *args, **o):
        root = Path(o["datasets"]) if o["datasets"] else shared_datasets_root()
        if not (root / "ph2").is_dir():
            raise CommandError(f"PH2 not found under {root}")
        samples = [s for s in read_dataset(root / "ph2").samples if s.mask_path]
        if o["limit"]:
            samples = samples[: o["limit"]]
        loaded = get_model()
        if loaded.cam_layer is None:
            raise CommandError("this model has no feature layer for Grad-CAM")
        meta = loaded.metadata
        method = heatmap_method()  # the map serving draws (ml/serving/heatmap.py)
        inside, area, empty, outcomes, edges, flipped_bottom, activity = [], [], [], [], [], [], []

        def edge_shares(cam):
            """The share of a map's heat in its bottom row, top row, left and right column (nan for an empty
            map): the bottom row for TensorFlow's padding artefact, the others so a fix cannot just move it."""
            if not float(cam.max()) > 0:
                return [float("nan")] * 4
            return [float(edge.sum() / cam.sum()) for edge in (cam[-1], cam[0], cam[:, 0], cam[:, -1])]

        def served_map(image):  # the map and the outcome serving gives (ml.serving.classifier.predict, no gate)
            raw, _features, cam = loaded.analyse(image[None])
            probability, _near, _views, cam = loaded.settle(image, float(raw[0]), cam[0])
            outcome = outcome_for(probability, meta["threshold"], meta.get("uncertain_threshold"))
            return loaded.heat_map(image, float(raw[0]), cam), outcome

        for s in samples:
            image = preprocessing.preprocess(s.path, loaded.image_size)
            cam, outcome = served_map(image)
            share, lesion_share = heat_inside_mask(cam, s.mask_path)
            inside.append(share)
            area.append(lesion_share)
            empty.append(not float(cam.max()) > 0)
            # Does the heat follow the image? The same image upside down: the lesion's heat moves to
            # the other edge; heat that stays in the bottom row belongs to the network, not the skin.
            edges.append(edge_shares(cam))
            flipped_bottom.append(edge_shares(served_map(np.ascontiguousarray(image[::-1]))[0])[0])
            # A reference, not a bound: where the layer's features are at all, summed over its channels
            # whichever class they speak for. Grad-CAM weighs these same features for one class.
            activity.append(heat_inside_mask(loaded.feature_activity(image[None])[0], s.mask_path)[0])
            outcomes.append(outcome)
        inside, area, empty, activity = np.array(inside), np.array(area), np.array(empty), np.array(activity)
        flipped_bottom = np.array(flipped_bottom)
        bottom, top, left, right = np.array(edges).reshape(-1, 4).T

        def nanmean(values):
            return float(np.nanmean(values)) if np.isfinite(values).any() else None

        # An empty map (nothing anywhere speaks for malignancy) has no heat to place: it counts as
        # none inside the lesion in the headline mean, and is left out of the "where heat" mean.
        result = {
            "n": len(samples),
            "heat_map": method,
            "layer": loaded.cam_layer,
            "map_shape": list(cam.shape),
            "runtime": loaded.runtime.name,
            "model_version": meta.get("model_version"),
            "mean_heat_inside_lesion": float(np.mean(inside)),
            "median_heat_inside_lesion": float(np.median(inside)),
            "mean_lesion_area_share": float(np.mean(area)),
            "mean_feature_activity_inside_lesion": float(np.mean(activity)),
            "share_of_images_with_heat_mostly_inside": float(np.mean(inside >= 0.5)),
            "empty_maps": int(empty.sum()),
            "mean_heat_inside_lesion_where_heat": float(inside[~empty].mean()) if (~empty).any() else None,
        }

        def rows(keys):
            return {
                str(k): {
                    "n": int((keys == k).sum()),
                    "empty_maps": int(empty[keys == k].sum()),
                    "mean_heat_inside_lesion": float(inside[keys == k].mean()),
                    "mean_lesion_area_share": float(area[keys == k].mean()),
                    "mean_feature_activity_inside_lesion": float(activity[keys == k].mean()),
                    "mean_heat_in_bottom_row": nanmean(bottom[keys == k]),
                    "mean_heat_in_bottom_row_upside_down": nanmean(flipped_bottom[keys == k]),
                    "mean_heat_in_top_row": nanmean(top[keys == k]),
                    "mean_heat_in_left_column": nanmean(left[keys == k]),
                    "mean_heat_in_right_column": nanmean(right[keys == k]),
                }
                for k in sorted(set(keys))
            }

        # The heat is the malignant class's: on a benign lesion the lesion itself counts against
        # malignancy, so the heat there may well sit elsewhere. Each diagnosis apart, and each
        # outcome the clinician sees (where the model flags a lesion, is its heat on the lesion?):
        result["by_diagnosis"] = rows(np.array([s.detail or ("malignant" if s.label else "benign") for s in samples]))
        result["by_outcome"] = rows(np.array(outcomes))
        for k, v in result.items():
            if not k.startswith("by_"):
                self.stdout.write(f"{k:>40}: {v}")
        for d, row in [*result["by_diagnosis"].items(), *result["by_outcome"].items()]:
            self.stdout.write(
                f"{d:>40}: {row['mean_heat_inside_lesion']:.3f} of the heat inside, "
                f"lesion {row['mean_lesion_area_share']:.3f} of the image ({row['n']} images, "
                f"{row['empty_maps']} maps empty)"
            )
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result, indent=2))
