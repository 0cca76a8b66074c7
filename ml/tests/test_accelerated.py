"""Training on an accelerator without TensorFlow (ml/accelerated.py): the bundle that travels,
the host-side augmentation, a real (tiny) run under this machine's Keras backend, and its
import into a served model folder."""
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ml.accelerated import (AugmentedBatches, Recipe, augment, augmentation_pool, balanced_indices, load_bundle,
                            run_recipes)


@pytest.fixture(scope="module")
def bundle(ham10000_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "ham"
    call_command("prepare_accelerated", str(ham10000_root), "--output", str(out), "--limit", "120", "--parts", "2")
    return ham10000_root, out


def test_the_bundle_holds_train_models_split_and_no_test_image(bundle):
    from ml.datasets import read_dataset
    from ml.training import TrainConfig, split_for_training

    ham, out = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    train, val, test, _ = split_for_training(read_dataset(ham), TrainConfig(dataset=str(ham), limit=120))
    assert manifest["train"] == [[s.path.name, s.label] for s in train]
    assert manifest["validation"] == [[s.path.name, s.label] for s in val]
    assert manifest["train_diagnoses"] == [s.detail for s in train] and "mel" in manifest["train_diagnoses"]
    assert manifest["test"] == sorted(s.path.name for s in test) and test
    copied = sorted(f.name for part in ("part1", "part2") for f in (out / part).iterdir())
    assert copied == sorted(n for n, _ in manifest["train"] + manifest["validation"])
    assert not set(copied) & set(manifest["test"])


def test_a_missing_part_is_named(bundle, tmp_path):
    import shutil

    _, out = bundle
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    shutil.rmtree(partial / "part2")
    from ml.accelerated import AcceleratedError

    with pytest.raises(AcceleratedError, match="did every part travel"):
        load_bundle([partial])


def test_balanced_indices_are_half_and_half_and_go_through_each_class():
    y = np.array([0] * 30 + [1] * 6)
    batches = balanced_indices(y, 8, seed=0)
    seen = [next(batches) for _ in range(15)]
    assert all(int(y[b].sum()) == 4 for b in seen)
    # 4 malignant picks a batch from 6 images, each class used up before it is reshuffled: every
    # 3 batches hold two full rounds, each malignant image twice
    for i in range(0, 15, 3):
        picks = np.concatenate([b[y[b] == 1] for b in seen[i:i + 3]])
        assert sorted(picks.tolist()) == sorted(list(range(30, 36)) * 2)
    assert set(np.concatenate(seen)[y[np.concatenate(seen)] == 0]) == set(range(30))


def test_augment_changes_a_real_image_within_range_and_repeats_with_the_seed(bundle):
    from ml.preprocessing import preprocess_uint8

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


def test_mixup_blends_a_batch_and_its_labels_alike_on_the_accelerated_path(bundle):
    """Recipe.mixup (train_model --mixup): once _train sets it for phase 2, each batch is the same
    augmented batch blended as ml.training.mixup_batch blends it: one weight per image, its partner
    the batch read backwards, the labels (and a diagnosis head's) by the same weight."""
    _, x, y, _, _ = load_bundle([bundle[1]], log=lambda m: None)
    plain, mixed = AugmentedBatches(x, y, 8, seed=3), AugmentedBatches(x, y, 8, seed=3)
    mixed.mixup = 0.4
    malignant = []
    for _ in range(4):
        (images, labels), (blended, soft) = next(plain), next(mixed)
        assert not np.array_equal(images, blended)
        for i in range(8):
            d = (images[i] - images[7 - i]).ravel()
            w = float(np.dot(blended[i].ravel() - images[7 - i].ravel(), d) / np.dot(d, d))
            np.testing.assert_allclose(blended[i], w * images[i] + (1 - w) * images[7 - i], atol=0.05)
            np.testing.assert_allclose(soft[i], w * labels[i] + (1 - w) * labels[7 - i], atol=1e-4)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
        malignant.extend(soft[:, 1])
    malignant = np.array(malignant)
    assert ((malignant > 1e-3) & (malignant < 1 - 1e-3)).any()  # a benign and a malignant image blended
    dx = AugmentedBatches(x, y, 8, seed=3, diagnoses=np.arange(len(y)) % 3)
    dx.mixup = 0.4
    diagnoses = np.concatenate([next(dx)[1]["diagnosis"] for _ in range(4)])
    np.testing.assert_allclose(diagnoses.sum(axis=1), 1.0, rtol=1e-6)
    assert ((diagnoses > 1e-3) & (diagnoses < 1 - 1e-3)).any()


@pytest.fixture(scope="module")
def tiny_run(bundle, tmp_path_factory):
    """A real run of ml.accelerated under this machine's Keras (TensorFlow here, JAX on the GPU machine),
    with symmetric padding as on the GPU (TensorFlow's is the default everywhere else in the tests)."""
    _, out = bundle
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_recipes([out], run_dir, None, [Recipe("tiny", head_epochs=1, epochs=1, batch_size=16,
                                                        padding="symmetric")],
                          budget_seconds=600, workers=0, log=lambda m: None)
    return run_dir, summary


def test_a_run_records_its_history_and_best_weights(tiny_run):
    run_dir, summary = tiny_run
    (record,) = summary["runs"]
    assert record["recipe"]["name"] == "tiny" and record["best_epoch"] == 1 and record["epochs_run"] == 1
    assert len(record["history"]["val_auc"]) == 2  # one head epoch, one fine-tuning epoch
    assert record["validation_auc"] == record["history"]["val_auc"][-1]
    assert json.loads((run_dir / "runs.json").read_text())["runs"][0]["validation_auc"] == record["validation_auc"]
    with np.load(run_dir / "weights-tiny.npz") as stored:
        assert len(stored.files) == len(record["variables"])


def test_import_model_serves_the_runs_weights(bundle, tiny_run, tmp_path):
    import keras

    from ml.accelerated import network_config
    from ml.network import Network

    ham, _ = bundle
    run_dir, summary = tiny_run
    out = tmp_path / "model"
    call_command("import_model", str(run_dir), "--dataset", str(ham), "--output", str(out))
    for name in ("model.keras", "model.tflite", "gate.npz", "splits.json", "metrics.json", "validation_roc.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["calibration_fit"]["command"].startswith("manage.py import_model")
    assert meta["calibration_fit"]["runtime"] == "litert"
    assert meta["training"]["accelerated"]["run"] == "tiny"
    assert meta["training"]["padding"] == "symmetric"
    assert meta["data"]["validation"]["n"] == len(summary["manifest"]["validation"])

    # the served model is the run's network: the same weights, and on validation the scores the run's
    # network gives on the bundle's decoded images (within the float16 export's rounding). Scores, not
    # the AUC: a one-epoch model scores the tiny validation split nearly alike, so rounding may swap
    # a pair, and with a few malignant images one pair moves the AUC by 0.02 or more.
    from ml import tta
    from ml.classifier import LoadedModel, raw_orientations
    from ml.datasets import read_dataset

    served_model = keras.models.load_model(out / "model.keras", compile=False)
    saved = served_model.get_weights()
    with np.load(run_dir / "weights-tiny.npz") as stored:
        for i, w in enumerate(saved):
            np.testing.assert_array_equal(w, stored[f"arr_{i}"])
    assert len(saved) == len(Network(network_config(Recipe("x"), None)).full_model().get_weights())
    # and the run's padding: the served network pads its stride-2 layers as the run did, TensorFlow's doesn't
    def config(model):
        return json.dumps(model.get_config())

    assert '"stem_conv_pad"' in config(served_model)
    assert '"stem_conv_pad"' not in config(Network(network_config(Recipe("x"), None)).full_model())
    # the run's network (model.keras holds exactly its weights) through the Keras runtime, on the bundle's images
    _, _, _, x_val, _ = load_bundle([bundle[1]], log=lambda m: None)
    expected = raw_orientations(LoadedModel(out, runtime="keras"), x_val, orientations=tta.IDENTITY)[:, 0]
    paths = {s.path.name: s.path for s in read_dataset(ham).samples}
    serving = LoadedModel(out)  # as serving loads it
    served = raw_orientations(serving, [paths[name] for name, _ in summary["manifest"]["validation"]],
                              orientations=tta.IDENTITY)[:, 0]
    assert serving.runtime.name == "litert"
    np.testing.assert_allclose(served, expected, atol=0.01)
    assert np.ptp(expected) > 0.01  # the comparison has spread to check, not one constant score

    # its model card says where and how it was trained
    call_command("write_model_card", "--model", str(out))
    card = (out / "MODEL_CARD.md").read_text()
    assert "python -m ml.accelerated train" in card and "run tiny of 1 chosen on validation" in card
    assert "manage.py import_model" in card
    assert "pad symmetrically" in card

    # calibrating it again undoes the same training prior, one half (every batch was half malignant)
    offset = meta["logit_offset"]
    y_val = np.array([label for _, label in summary["manifest"]["validation"]])
    assert offset == pytest.approx(np.log(y_val.mean() / (1 - y_val.mean())))
    call_command("calibrate_model", str(ham), "--model", str(out))
    assert json.loads((out / "metadata.json").read_text())["logit_offset"] == pytest.approx(offset)


def test_a_recipe_with_a_diagnosis_head_trains_it_and_keeps_the_served_weights(bundle, tmp_path):
    """Recipe.diagnosis_weight (train_model --diagnosis-weight): the head's loss plus the weighted
    diagnosis loss is minimised, and the run's weights are the served network's alone. With mixup on
    (Recipe.mixup) the blended labels of both outputs go through the same loss."""
    from ml.accelerated import network_config
    from ml.network import Network

    _, out = bundle
    recipe = Recipe("tiny-dx", head_epochs=1, epochs=1, batch_size=16, diagnosis_weight=0.5, mixup=0.2)
    summary = run_recipes([out], tmp_path, None, [recipe], budget_seconds=600, workers=0, log=lambda m: None)
    history = summary["runs"][0]["history"]
    assert len(history["diagnosis_loss"]) == 2 and len(history["val_auc"]) == 2
    for total, head, diagnosis in zip(history["total_loss"], history["loss"], history["diagnosis_loss"]):
        assert total == pytest.approx(head + 0.5 * diagnosis, rel=1e-3) and diagnosis > 0.1
    served = Network(network_config(recipe, None)).full_model()
    with np.load(tmp_path / "weights-tiny-dx.npz") as stored:
        assert [stored[f"arr_{i}"].shape for i in range(len(stored.files))] == [w.shape for w in served.get_weights()]


def test_a_diagnosis_head_needs_the_bundles_diagnoses(bundle):
    from ml.accelerated import AcceleratedError, train_recipe

    _, x, y, _, _ = load_bundle([bundle[1]], log=lambda m: None)
    with pytest.raises(AcceleratedError, match="make gpu-bundle again"):
        train_recipe(Recipe("dx", diagnosis_weight=0.5), x, y, x[:4], y[:4], None, deadline=0.0, train_diagnoses=None)


def test_import_model_refuses_a_run_from_another_split(bundle, tiny_run, tmp_path):
    ham, _ = bundle
    run_dir, _ = tiny_run
    runs = json.loads((run_dir / "runs.json").read_text())
    runs["manifest"]["limit"] = 100  # as if the bundle had been another subset
    other = tmp_path / "other"
    other.mkdir()
    (other / "runs.json").write_text(json.dumps(runs))
    (other / "weights-tiny.npz").write_bytes((run_dir / "weights-tiny.npz").read_bytes())
    with pytest.raises(CommandError, match="does not split into the run's"):
        call_command("import_model", str(other), "--dataset", str(ham), "--output", str(tmp_path / "m"))
    with pytest.raises(CommandError, match="no run named 'nope'"):
        call_command("import_model", str(run_dir), "--dataset", str(ham), "--output", str(tmp_path / "m"),
                     "--run", "nope")
    with pytest.raises(CommandError, match="no runs.json"):
        call_command("import_model", str(tmp_path), "--dataset", str(ham), "--output", str(tmp_path / "m"))


def test_host_augmentation_changes_images_about_as_much_as_trainings_keras_layers(bundle):
    """Not the same pixels (other code, other random draws), but the same kinds and sizes of change."""
    from ml.network import build_augmenter

    _, x, _, _, _ = load_bundle([bundle[1]])
    x = x[:64]
    keras_views = np.concatenate([np.asarray(build_augmenter(i)(x[i:i + 32].astype(np.float32), training=True))
                                  for i in (0, 32)])
    rng = np.random.default_rng(0)
    host_views = np.stack([augment(image, rng) for image in x])

    def summary(views):
        views = np.clip(views, 0, 255)
        value = views.max(axis=-1)
        saturation = ((value - views.min(axis=-1)) / np.maximum(value, 1e-6)).mean(axis=(1, 2))
        change = np.abs(views - x).mean(axis=(1, 2, 3))
        spread = views.mean(axis=(1, 2, 3))
        return [np.percentile(v, q) for v in (saturation, change, spread) for q in (10, 50, 90)]

    k, h = summary(keras_views), summary(host_views)
    np.testing.assert_allclose(h[:3], k[:3], atol=0.1)  # mean HSV saturation, 10th/50th/90th percentiles
    np.testing.assert_allclose(h[3:6], k[3:6], rtol=0.35)  # mean change from the original image
    np.testing.assert_allclose(h[6:], k[6:], rtol=0.2)  # mean brightness


def test_what_the_accelerator_runs_imports_neither_django_nor_tensorflow():
    """The GPU machine has Keras on JAX and no Django or TensorFlow: what step 2 imports must not need them."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys, ml.accelerated, ml.network, ml.backbone, ml.preprocessing, ml.evaluation; "
            "ml.accelerated.main(['train', '--help'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--budget-minutes" in done.stdout
    check = ("import sys, ml.accelerated, ml.network, ml.backbone, ml.preprocessing, ml.evaluation; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'tensorflow', 'keras'}))")
    done = subprocess.run([sys.executable, "-c", check], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("text, said", [
    ("[{'name': 'a'}]", "not JSON"),
    ('{"name": "a"}', "a JSON list of objects"),
    ('[{"name": "a", "epoch": 3}]', "a: unknown field(s) epoch"),
    ('[{"epochs": 3}]', "no 'name'"),
    ('[{"name": "a", "padding": "same"}]', "a: padding 'same' is not one of tf, symmetric"),
    ('[{"name": "a"}, {"name": "a", "seed": 7}]', "share a name"),
    ('[{"name": "a", "mixup": -0.2}]', "a: mixup -0.2 is not a number, 0 (off) or more"),
    ('[{"name": "a", "backbone": "efficientnetb0"}]',
     "a: backbone 'efficientnetb0' is not one of efficientnet-lite0, efficientnet-lite2"),
])
def test_bad_recipes_are_refused_before_any_training(text, said, tmp_path, capsys):
    """--recipes is typed by hand on a machine lent for minutes: a mistake is said at once, in words."""
    from ml.accelerated import main

    assert main(["train", "--bundle", str(tmp_path), "--output", str(tmp_path / "out"), "--recipes", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err, err
    assert not (tmp_path / "out").exists()


def test_good_recipes_are_read_with_their_padding():
    from ml.accelerated import recipes_from_json

    (recipe,) = recipes_from_json('[{"name": "s", "padding": "symmetric", "epochs": 15, "seed": 7}]')
    assert recipe == Recipe("s", padding="symmetric", epochs=15, seed=7)
    assert recipe.backbone == "efficientnet-lite0"  # runs.json written before the field existed read the same
    (recipe,) = recipes_from_json('[{"name": "l2", "backbone": "efficientnet-lite2"}]')
    assert recipe.backbone == "efficientnet-lite2" and recipe.mixup == 0.0
    (recipe,) = recipes_from_json('[{"name": "m", "mixup": 0.2}]')
    assert recipe.mixup == 0.2


def test_a_checkpoint_that_did_not_travel_is_named_before_any_image_is_decoded(tmp_path, capsys):
    """A Lite2 recipe on a machine without Lite2's package needs --lite2-weights: a path that is not there
    is said at once, with the recipe and the option, before the bundle (which here is not one) is read."""
    from ml.accelerated import main

    missing = tmp_path / "gpu-lite2.pth"
    recipes = '[{"name": "l0"}, {"name": "l2", "backbone": "efficientnet-lite2"}]'
    assert main(["train", "--bundle", str(tmp_path), "--output", str(tmp_path / "out"), "--recipes", recipes,
                 "--lite2-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: l2: efficientnet-lite2's checkpoint") and f"{missing} (--lite2-weights)" in err, err
    assert not (tmp_path / "out").exists()


def test_a_lite2_recipe_trains_lite2_and_imports_as_lite2(bundle, tmp_path):
    """Recipe.backbone (train_model --backbone): a Lite2 run on the GPU path, from the checkpoint file that
    travels (make gpu-bundle's runs/gpu-lite2.pth), comes home as a served Lite2 model."""
    from ml.accelerated import network_config
    from ml.backbone import lite0_weights_path
    from ml.network import Network

    ham, out = bundle
    recipe = Recipe("tiny-l2", head_epochs=1, epochs=1, batch_size=16, backbone="efficientnet-lite2")
    run_dir = tmp_path / "run"
    summary = run_recipes([out], run_dir, {"efficientnet-lite2": str(lite0_weights_path("lite2"))}, [recipe],
                          budget_seconds=600, workers=0, log=lambda m: None)
    assert summary["runs"][0]["recipe"]["backbone"] == "efficientnet-lite2"
    model_dir = tmp_path / "model"
    call_command("import_model", str(run_dir), "--dataset", str(ham), "--output", str(model_dir))
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["backbone"] == meta["training"]["backbone"] == "efficientnet-lite2"
    assert meta["model_version"].startswith("lite2-")
    import keras

    served = keras.models.load_model(model_dir / "model.keras", compile=False)
    lite2 = Network(network_config(recipe, None)).full_model()
    assert [w.shape for w in served.get_weights()] == [w.shape for w in lite2.get_weights()]
    assert len(served.get_weights()) > len(Network(network_config(Recipe("x"), None)).full_model().get_weights())
    call_command("write_model_card", "--model", str(model_dir))
    assert "EfficientNet-Lite2 with ImageNet weights" in (model_dir / "MODEL_CARD.md").read_text()


def test_gpu_train_sh_keeps_what_each_trip_carried(bundle, tmp_path):
    """ml/gpu_train.sh, the GPU machine's side: a bundle that travels in several trips is put
    back together under GPU_STAGE; anything else it is handed is refused by name."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "gpu_train.sh"
    _, out = bundle
    stage = tmp_path / "stage"
    checkpoint = tmp_path / "lite0.pth"
    checkpoint.write_bytes(b"weights")
    lite2 = tmp_path / "gpu-lite2.pth"
    lite2.write_bytes(b"lite2 weights")
    env = {**os.environ, "GPU_STAGE": str(stage)}

    def sh(*args):
        return subprocess.run(["bash", str(script), *map(str, args)], env=env, capture_output=True, text=True)

    assert sh().returncode == 2  # no mode: the usage
    first = sh("stage", out / "manifest.json", out / "part1", checkpoint)
    assert first.returncode == 0, first.stderr
    assert sh("stage", out / "part2", lite2).returncode == 0
    assert (stage / "lite0.pth").read_bytes() == b"weights"
    assert (stage / "lite2.pth").read_bytes() == b"lite2 weights"  # Lite2's by its name, beside Lite0's
    manifest, x_train, _, x_val, _ = load_bundle([stage / "bundle"], log=lambda m: None)
    assert len(x_train) == len(manifest["train"]) and len(x_val) == len(manifest["validation"])

    refused = sh("stage", tmp_path / "notes.txt")
    assert refused.returncode == 2 and "notes.txt is neither a bundle folder" in refused.stderr
    empty = tmp_path / "empty"
    env["GPU_STAGE"] = str(empty)
    missing = sh("train", out)
    assert missing.returncode == 2 and "no Lite0 (or Lite2) checkpoint" in missing.stderr
