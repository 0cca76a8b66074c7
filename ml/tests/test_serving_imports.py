"""Serving is the light end of the ml package: importing the classifier that diagnosis calls
brings in no TensorFlow, Keras, training, data-reading or reporting module (the first prediction
pays for TensorFlow where the LiteRT runtime is missing, nothing else does). Import contracts in
pyproject.toml keep the direction; this checks what a fresh interpreter really loads."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "ml.training", "ml.model", "ml.data", "ml.reporting", "ml.management")


def test_importing_the_classifier_loads_no_tensorflow_keras_or_training():
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'skincare_site.settings'; django.setup(); import ml.serving.classifier"
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip() for line in completed.stderr.splitlines() if line.startswith("import time:")
    }
    assert "ml.serving.classifier" in modules and "ml.preprocessing" in modules  # the report was read
    loaded = sorted(m for m in modules if m.startswith(HEAVY))
    assert not loaded, loaded


def test_no_module_of_ml_or_diagnosis_is_in_an_import_cycle():
    """The layers contract (pyproject.toml) keeps the direction between packages; this keeps modules
    within a package from importing each other round in a circle (held apart by imports in functions)."""
    import grimp

    graph = grimp.build_graph("ml", "diagnosis")
    modules = {m for m in graph.modules if ".tests" not in m and ".migrations" not in m}
    cycles = sorted(
        (module, imported)
        for module in modules
        for imported in graph.find_modules_directly_imported_by(module)
        if imported in modules and graph.chain_exists(importer=imported, imported=module)
    )
    assert not cycles, cycles
