"""manage.py evaluate_gate: how often the image gate refuses junk and accepts real lesions."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import read_dataset, shared_datasets_root
from ml.data.splits import recorded_splits, trained_on
from ml.reporting.junk import DEBIAN_PHOTO_FOLDER, PHOTO_SETS, debian_photos, junk_images
from ml.serving import classifier


class Command(BaseCommand):
    requires_system_checks = []
    help = (
        "Measure the image gate: the share of a junk set refused (sample photos, uniform colours, noise, "
        "lesion images made black, burnt out or blurred) and the share of real lesion images accepted "
        "(the held-out test part of every dataset the model was trained on, and PH2), malignant ones counted "
        "apart: a refused melanoma is a missed one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--datasets", help="the shared datasets folder (default: $SKINCARE_DATASETS or ../shared/datasets)"
        )
        parser.add_argument(
            "--spoiled", type=int, default=20, help="lesion images per dataset to spoil for the junk set"
        )
        parser.add_argument("--json", dest="json_path")

    def handle(self, *args, **o):
        root = Path(o["datasets"]) if o["datasets"] else shared_datasets_root()
        model_dir = Path(settings.SKINCARE_MODEL_DIR)
        if not (root / "ham10000").is_dir() or not (root / "ph2").is_dir():
            raise CommandError(f"HAM10000 and PH2 not found under {root}")
        loaded = classifier.get_model()
        if loaded.gate is None:
            raise CommandError(f"the model at {model_dir} has no image gate")
        try:
            held = recorded_splits(model_dir)["test"]
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        lesions = {}  # every held-out test part, then PH2: [(path, label)]
        for name in sorted(trained_on(model_dir) | {"ham10000"}, key=lambda n: (n != "ham10000", n)):
            if not (root / name).is_dir():
                raise CommandError(f"{name}, which the model was trained on, not found under {root}")
            lesions[name] = [(s.path, s.label) for s in read_dataset(root / name).samples if s.path.name in held]
        lesions["ph2"] = [(s.path, s.label) for s in read_dataset(root / "ph2").samples]
        ham = [path for path, _ in lesions["ham10000"]]
        ph2 = [path for path, _ in lesions["ph2"]]
        rng = np.random.default_rng(0)
        spoil_from = list(rng.choice(ham, o["spoiled"], replace=False)) + list(
            rng.choice(ph2, o["spoiled"], replace=False)
        )

        def decide(source):
            return classifier.predict(source)  # the serving path itself: the gate, as a request meets it

        junk = junk_images(spoil_from)
        refused_by_kind, missed = Counter(), []
        for name, image in junk:
            decision = decide(image)
            kind = name.split(":")[0]
            refused_by_kind[kind] += int(not decision.assessed)
            if decision.assessed:
                missed.append(name)
        kinds = Counter(name.split(":")[0] for name, _ in junk)
        result = {
            "model_version": loaded.metadata.get("model_version"),
            "gate": loaded.gate.limits,
            "junk": {
                "n": len(junk),
                "refused": len(junk) - len(missed),
                "refused_share": (len(junk) - len(missed)) / len(junk),
                "by_kind": {k: {"n": kinds[k], "refused": refused_by_kind[k]} for k in kinds},
                "accepted": missed,
            },
        }

        def photo_result(photos):
            accepted = [f"{category}:{name}" for category, name, path in photos if decide(path).assessed]
            return {
                "source": f"{DEBIAN_PHOTO_FOLDER} (Debian package opencv-doc)",
                "n": len(photos),
                "refused": len(photos) - len(accepted),
                "by_category": {
                    category: {
                        "n": sum(c == category for c, _, _ in photos),
                        "refused": sum(c == category and f"{c}:{n}" not in accepted for c, n, _ in photos),
                    }
                    for category in dict.fromkeys(c for c, _, _ in photos)
                },
                "accepted": accepted,
            }

        # The held-out set was never used to choose anything about the gate (ml.reporting.junk): a test.
        for key, (_title, photos) in PHOTO_SETS.items():
            result[key] = photo_result(debian_photos(photos=photos))
        result["lesions"] = {}
        for name, images in lesions.items():
            reasons, malignant_refused = Counter(), []
            for path, label in images:
                d = decide(path)
                if not d.assessed:
                    reasons[d.reason] += 1
                    if label:
                        malignant_refused.append(path.name)
            refused = sum(reasons.values())
            result["lesions"][name] = {
                "part": "all" if name == "ph2" else "test",
                "n": len(images),
                "accepted": len(images) - refused,
                "accepted_share": (len(images) - refused) / len(images),
                "n_malignant": sum(label for _, label in images),
                "malignant_refused": malignant_refused,
                "refusal_reasons": dict(reasons),
            }
        result["ham10000_test"], result["ph2"] = result["lesions"]["ham10000"], result["lesions"]["ph2"]
        self.stdout.write(
            f"junk refused: {result['junk']['refused']}/{len(junk)} = {result['junk']['refused_share']:.3f}"
        )
        for k, row in result["junk"]["by_kind"].items():
            self.stdout.write(f"  {k:>14}: {row['refused']}/{row['n']} refused")
        if missed:
            self.stdout.write("  accepted by mistake: " + ", ".join(missed))
        for key, (title, _photos) in PHOTO_SETS.items():
            r = result[key]
            if not r["n"]:
                self.stdout.write(f"{title}: none found in {DEBIAN_PHOTO_FOLDER} (apt-get install opencv-doc)")
                continue
            self.stdout.write(f"{title} (opencv-doc) refused: {r['refused']}/{r['n']}")
            for category, row in r["by_category"].items():
                self.stdout.write(f"  {category:>21}: {row['refused']}/{row['n']} refused")
            if r["accepted"]:
                self.stdout.write("  accepted by mistake: " + ", ".join(r["accepted"]))
        for name, r in result["lesions"].items():
            self.stdout.write(
                f"{name} ({r['part']}) accepted: {r['accepted']}/{r['n']} = {r['accepted_share']:.3f}; malignant "
                f"refused: {len(r['malignant_refused'])} of {r['n_malignant']}"
                + (f" ({', '.join(r['malignant_refused'])})" if r["malignant_refused"] else "")
            )
            for reason, n in r["refusal_reasons"].items():
                self.stdout.write(f"  refused {n}: {reason}")
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result, indent=2))
