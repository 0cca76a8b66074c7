"""Training on a GPU machine without TensorFlow (ml.training.gpu here, ml.training.remote there): the
bundle that travels, the host-side augmentation and balanced batches, a real (tiny) run of the one
trainer under this machine's Keras backend, and its import into a served model folder."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ml.data.datasets import read_dataset
from ml.model.augmentation import augment
from ml.model.network import Network
from ml.preprocessing import preprocess_uint8
from ml.serving import tta
from ml.serving.classifier import LoadedModel, raw_orientations
from ml.training.batches import AugmentedBatches, augmentation_pool, balanced_indices
from ml.training.config import TrainConfig
from ml.training.loop import network_spec
from ml.training.remote import BundleError, load_bundle, run
from ml.training.trainer import split_for_training


@pytest.fixture(scope="module")
def bundle(ham10000_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "ham"
    call_command("prepare_accelerated", str(ham10000_root), "--output", str(out), "--limit", "120", "--parts", "2")
    return ham10000_root, out


@pytest.fixture(scope="module")
def tiny_run(bundle, tmp_path_factory):
    """A real run of the trainer as the GPU machine runs it, under this machine's Keras (TensorFlow here,
    JAX there), with symmetric padding (TensorFlow's is the default everywhere else in the tests)."""
    _, out = bundle
    run_dir = tmp_path_factory.mktemp("run")
    summary = run(
        [out],
        run_dir,
        {"epochs": 1, "finetune_epochs": 1, "batch_size": 16, "padding": "symmetric"},
        workers=0,
        log=lambda m: None,
    )
    return run_dir, summary


def test_a_run_records_its_history_and_weights(tiny_run):
    run_dir, summary = tiny_run
    record = summary["record"]
    assert len(record["history"]["val_auc"]) == 2  # one head epoch, one fine-tuning epoch
    assert record["phases"]["kept"] in ("finetuned", "frozen")
    assert summary["config"]["padding"] == "symmetric" and summary["config"]["finetune_epochs"] == 1
    assert json.loads((run_dir / "run.json").read_text())["record"]["phases"] == record["phases"]
    with np.load(run_dir / "weights.npz") as stored:
        assert len(stored.files) == len(Network(network_spec(TrainConfig(["x"]))).model.get_weights())


def test_what_the_gpu_machine_imports_needs_neither_django_nor_tensorflow():
    """The GPU machine has Keras on JAX and no Django or TensorFlow: what step 2 imports before training
    must not need them (the trainer itself imports Keras, on whatever backend is there)."""
    root = Path(__file__).resolve().parents[2]
    code = "import ml.training.remote as r; r.main(['--help'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--finetune-epochs" in done.stdout and "--padding" in done.stdout
    check = (
        "import sys, ml.training.remote, ml.training.batches, ml.model.augmentation, ml.preprocessing; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'tensorflow', 'keras'}))"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_setting_the_gpu_run_may_not_change_is_refused(bundle, tmp_path):
    with pytest.raises(BundleError, match="cannot change seed"):
        run([bundle[1]], tmp_path, {"seed": 7}, workers=0, log=lambda m: None)


def test_the_bundle_holds_train_models_split_and_no_test_image(bundle):
    ham, out = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    train, val, test, _ = split_for_training([read_dataset(ham)], TrainConfig(datasets=[str(ham)], limit=120))
    assert manifest["train"] == [[s.path.name, s.label] for s in train]
    assert manifest["validation"] == [[s.path.name, s.label] for s in val]
    assert manifest["test"] == sorted(s.path.name for s in test) and test
    copied = sorted(f.name for part in ("part1", "part2") for f in (out / part).iterdir())
    assert copied == sorted(n for n, _ in manifest["train"] + manifest["validation"])
    assert not set(copied) & set(manifest["test"])


def test_a_missing_part_is_named(bundle, tmp_path):
    _, out = bundle
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    shutil.rmtree(partial / "part2")
    with pytest.raises(BundleError, match="did every part travel"):
        load_bundle([partial])


def test_balanced_indices_are_half_and_half_and_go_through_each_class():
    y = np.array([0] * 30 + [1] * 6)
    batches = balanced_indices(y, 8, seed=0)
    seen = [next(batches) for _ in range(15)]
    assert all(int(y[b].sum()) == 4 for b in seen)
    # 4 malignant picks a batch from 6 images, each class used up before it is reshuffled: every
    # 3 batches hold two full rounds, each malignant image twice
    for i in range(0, 15, 3):
        picks = np.concatenate([b[y[b] == 1] for b in seen[i : i + 3]])
        assert sorted(picks.tolist()) == sorted(list(range(30, 36)) * 2)
    assert set(np.concatenate(seen)[y[np.concatenate(seen)] == 0]) == set(range(30))


def test_augment_changes_a_real_image_within_range_and_repeats_with_the_seed(bundle):
    _, out = bundle
    image = preprocess_uint8(sorted((out / "part1").iterdir())[0])
    a = augment(image, np.random.default_rng(1))
    assert a.shape == image.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 255.0
    assert np.array_equal(a, augment(image, np.random.default_rng(1)))
    views = [augment(image, np.random.default_rng(s)) for s in range(6)]
    assert min(np.abs(v - image).mean() for v in views) > 3.0  # every view differs visibly
    assert np.abs(views[0] - views[1]).mean() > 3.0


def test_augmented_batches_from_worker_processes_are_balanced(bundle):
    manifest, x, y, _, _ = load_bundle([bundle[1]])
    pool = augmentation_pool(x, workers=2)
    try:
        batches = AugmentedBatches(x, y, 8, seed=0, pool=pool)
        for _ in range(3):
            images, labels = next(batches)
            assert images.shape == (8, 224, 224, 3) and images.dtype == np.float32
            assert labels.sum(axis=0).tolist() == [4.0, 4.0]
        # the same batches as without workers: each batch's seed, not the process, decides its views
        here = AugmentedBatches(x, y, 8, seed=0)
        again = AugmentedBatches(x, y, 8, seed=0, pool=pool)
        for _ in range(2):
            (a, la), (b, lb) = next(here), next(again)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
    finally:
        pool.terminate()


def test_import_model_serves_the_runs_weights(bundle, tiny_run, tmp_path):
    ham, _ = bundle
    run_dir, summary = tiny_run
    out = tmp_path / "model"
    call_command("import_model", str(run_dir), "--dataset", str(ham), "--output", str(out))
    for name in ("model.keras", "model.tflite", "gate.npz", "splits.json", "metrics.json", "validation_roc.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["calibration_fit"]["command"].startswith("manage.py import_model")
    assert meta["calibration_fit"]["runtime"] == "litert"
    assert "gpu_train.sh" in meta["trained_on"]
    assert meta["training"]["padding"] == "symmetric"
    assert meta["data"]["validation"]["n"] == len(summary["manifest"]["validation"])

    # the served model is the run's network: the same weights, and on validation the scores the run's
    # network gives on the bundle's decoded images (within the float16 export's rounding). Scores, not
    # the AUC: a one-epoch model scores the tiny validation split nearly alike, so rounding may swap
    # a pair, and with a few malignant images one pair moves the AUC by 0.02 or more.
    served_model = keras.models.load_model(out / "model.keras", compile=False)
    saved = served_model.get_weights()
    with np.load(run_dir / "weights.npz") as stored:
        for i, w in enumerate(saved):
            np.testing.assert_array_equal(w, stored[f"arr_{i}"])
    assert len(saved) == len(Network(network_spec(TrainConfig(["x"]))).model.get_weights())

    # and the run's padding: the served network pads its stride-2 layers as the run did, TensorFlow's doesn't
    def config(model):
        return json.dumps(model.get_config())

    assert '"stem_conv_pad"' in config(served_model)
    assert '"stem_conv_pad"' not in config(Network(network_spec(TrainConfig(["x"]))).model)
    # the run's network (model.keras holds exactly its weights) through the Keras runtime, on the bundle's images
    _, _, _, x_val, _ = load_bundle([bundle[1]], log=lambda m: None)
    expected = raw_orientations(LoadedModel(out, runtime="keras"), x_val, orientations=tta.IDENTITY)[:, 0]
    paths = {s.path.name: s.path for s in read_dataset(ham).samples}
    serving = LoadedModel(out)  # as serving loads it
    served = raw_orientations(
        serving, [paths[name] for name, _ in summary["manifest"]["validation"]], orientations=tta.IDENTITY
    )[:, 0]
    assert serving.runtime.name == "litert"
    np.testing.assert_allclose(served, expected, atol=0.01)
    assert np.ptp(expected) > 0.01  # the comparison has spread to check, not one constant score

    # its model card says where and how it was trained
    call_command("write_model_card", "--model", str(out))
    card = (out / "MODEL_CARD.md").read_text()
    assert "gpu_train.sh" in card
    assert "manage.py import_model" in card
    assert "pad symmetrically" in card

    # the calibration starts from the offset that undoes the training prior, one half (every batch was half
    # malignant), and calibrating it again fits the same
    offset = meta["logit_offset"]
    y_val = np.array([label for _, label in summary["manifest"]["validation"]])
    prior = summary["record"]["train_prior"]  # one half where fine-tuning's balanced batches were kept
    assert meta["prior_offset"] == pytest.approx(
        np.log(y_val.mean() / (1 - y_val.mean())) - np.log(prior / (1 - prior))
    )
    call_command("calibrate_model", str(ham), "--model", str(out), "--views", "none")  # the same scores
    assert json.loads((out / "metadata.json").read_text())["logit_offset"] == pytest.approx(offset)


def test_import_model_refuses_a_run_from_another_split(bundle, tiny_run, tmp_path):
    ham, _ = bundle
    run_dir, _ = tiny_run
    summary = json.loads((run_dir / "run.json").read_text())
    summary["manifest"]["limit"] = 100  # as if the bundle had been another subset
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps(summary))
    (other / "weights.npz").write_bytes((run_dir / "weights.npz").read_bytes())
    with pytest.raises(CommandError, match="do not split into the run's"):
        call_command("import_model", str(other), "--dataset", str(ham), "--output", str(tmp_path / "m"))
    with pytest.raises(CommandError, match="no run.json"):
        call_command("import_model", str(tmp_path), "--dataset", str(ham), "--output", str(tmp_path / "m"))


def test_gpu_train_sh_keeps_what_each_trip_carried(bundle, tmp_path):
    """ml/gpu_train.sh, the GPU machine's side: a bundle that travels in several trips is put
    back together under GPU_STAGE; anything else it is handed is refused by name."""
    import os

    script = Path(__file__).resolve().parents[1] / "gpu_train.sh"
    _, out = bundle
    stage = tmp_path / "stage"
    checkpoint = tmp_path / "lite0.pth"
    checkpoint.write_bytes(b"weights")
    env = {**os.environ, "GPU_STAGE": str(stage)}

    def sh(*args):
        return subprocess.run(["bash", str(script), *map(str, args)], env=env, capture_output=True, text=True)

    assert sh().returncode == 2  # no mode: the usage
    first = sh("stage", out / "manifest.json", out / "part1", checkpoint)
    assert first.returncode == 0, first.stderr
    assert sh("stage", out / "part2").returncode == 0
    assert (stage / "lite0.pth").read_bytes() == b"weights"
    manifest, x_train, _, x_val, _ = load_bundle([stage / "bundle"], log=lambda m: None)
    assert len(x_train) == len(manifest["train"]) and len(x_val) == len(manifest["validation"])

    refused = sh("stage", tmp_path / "notes.txt")
    assert refused.returncode == 2 and "notes.txt is neither a bundle folder" in refused.stderr
    empty = tmp_path / "empty"
    env["GPU_STAGE"] = str(empty)
    missing = sh("train", out)
    assert missing.returncode == 2 and "no Lite0 checkpoint" in missing.stderr
