"""manage.py benchmark_model: how fast and how big the serving path is, beside the naive baseline.

Everything in one run on the same images:
- p50_ms / p95_ms: ml.serving.classifier.predict on image bytes (decode, preprocessing, gate, model,
  calibration and the heat map (SKINCARE_HEATMAP: Grad-CAM by default) included), one image at a time, as a request does it;
- baseline_keras_predict_p50_ms: the naive way, Keras `model.predict` on each preprocessed image;
- rss_mb: this worker's resident memory after 100 serving predictions (measured before the
  baseline loads TensorFlow, so it is what a serving worker holds);
- cold_start_s: a fresh Python process, from start to its first prediction returned.

Latency on a small shared machine varies from run to run, so the timed loops run --rounds
times and the figures are the median of the rounds' figures (each round's p50 is kept too).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml import preprocessing
from ml.artifact import MODEL_FILENAME
from ml.data.datasets import shared_datasets_root
from ml.serving import classifier

COLD_START_SCRIPT = r"""
import os, sys, time
t0 = float(sys.argv[1])
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skincare_site.settings")
django.setup()
from ml.serving import classifier
result = classifier.predict(open(sys.argv[2], "rb").read())
print(time.time() - t0, classifier.get_model().runtime.name, "tensorflow" in sys.modules)
"""


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed_rounds(call, blobs, rounds: int) -> list[list[float]]:
    """Milliseconds of call(blob) for every blob, the whole loop repeated `rounds` times."""
    out = []
    for _ in range(rounds):
        times = []
        for blob in blobs:
            started = time.perf_counter()
            call(blob)
            times.append((time.perf_counter() - started) * 1000.0)
        out.append(times)
    return out


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1))))]


class Command(BaseCommand):
    requires_system_checks = []
    help = "Measure the serving path's latency, memory and cold start against calling Keras model.predict."

    def add_arguments(self, parser):
        parser.add_argument("--images", help="folder of images to use (default: the shared HAM10000 and PH2 images)")
        parser.add_argument("-n", type=int, default=100, help="predictions to time (default: %(default)s)")
        parser.add_argument("--baseline-n", type=int, default=30, help="baseline predictions to time")
        parser.add_argument(
            "--rounds",
            type=int,
            default=5,
            help="times to repeat each timed loop; the figures are the rounds' median (default: %(default)s)",
        )
        parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")

    def _images(self, folder, n):
        if folder:
            paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        else:
            shared = shared_datasets_root()
            paths = (
                sorted((shared / "ham10000" / "images").glob("*.jpg"))[: n // 2]
                + sorted((shared / "ph2" / "images").glob("*.jpg"))[: n - n // 2]
            )
        if not paths:
            raise CommandError("no images found: pass --images FOLDER")
        return [paths[i % len(paths)] for i in range(n)]

    def handle(self, *args, **o):

        if o["rounds"] < 1 or o["n"] < 1 or o["baseline_n"] < 1:
            raise CommandError("-n, --baseline-n and --rounds must be at least 1")
        paths = self._images(o["images"], o["n"])
        blobs = [p.read_bytes() for p in paths]
        self.stdout.write(f"benchmarking {settings.SKINCARE_MODEL_DIR} on {len(blobs)} images ...")
        cold = subprocess.run(
            [sys.executable, "-c", COLD_START_SCRIPT, str(time.time()), str(paths[0])],
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
            env={**os.environ},
        )
        if cold.returncode != 0:
            raise CommandError(f"cold-start run failed: {cold.stderr.strip()[-500:]}")
        cold_s, runtime_name, tf_loaded = cold.stdout.split()[-3:]

        classifier.predict(blobs[0])  # load the model: not part of the per-request latency
        rounds = _timed_rounds(classifier.predict, blobs, o["rounds"])
        rss = _rss_mb()
        tf_in_serving = "tensorflow" in sys.modules

        from ml.model.layers import load_keras_model  # after the serving figures: it imports TensorFlow

        model = load_keras_model(Path(settings.SKINCARE_MODEL_DIR) / MODEL_FILENAME)
        size = classifier.get_model().image_size
        model.predict(preprocessing.preprocess(blobs[0], size)[None], verbose=0)
        baseline = _timed_rounds(
            lambda blob: model.predict(preprocessing.preprocess(blob, size)[None], verbose=0),
            blobs[: o["baseline_n"]],
            o["rounds"],
        )
        p50s = [_percentile(times, 50) for times in rounds]
        p50 = statistics.median(p50s)
        base = statistics.median(_percentile(times, 50) for times in baseline)
        figures = {
            "runtime": classifier.get_model().runtime.name,
            "heat_map": classifier.heatmap_method(),  # what each timed prediction drew
            "n": len(blobs),
            "rounds": o["rounds"],
            "p50_ms": round(p50, 2),
            "p95_ms": round(statistics.median(_percentile(times, 95) for times in rounds), 2),
            "p50_ms_by_round": [round(v, 2) for v in p50s],
            "baseline_keras_predict_p50_ms": round(base, 2),
            "speedup_vs_baseline": round(base / p50, 1),
            "rss_mb": round(rss, 1),
            "cold_start_s": round(float(cold_s), 2),
            "cold_start_runtime": runtime_name,
            "tensorflow_imported_by_serving": tf_in_serving or tf_loaded == "True",
            "cpus": os.cpu_count(),
            "inference_threads": getattr(classifier.get_model().runtime, "threads", None),
            "close_call_check": classifier.get_model().close_call is not None,
        }
        for key, value in figures.items():
            self.stdout.write(f"{key:>32}: {value}")
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(figures, indent=2))
            self.stdout.write(f"wrote {o['json_path']}")
