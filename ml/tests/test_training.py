"""train_model and evaluate_model end to end on a small real subset, and the serving path
agreeing with training's own figures on the images it held out."""
import json
from pathlib import Path

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_train_model_writes_a_complete_artifact(small_model):
    _ham, out = small_model
    for name in ("model.keras", "model.tflite", "head.npz", "gate.npz", "metadata.json", "metrics.json", "splits.json",
                 "accuracy_curve.png", "loss_curve.png",
                 "validation_roc.png", "validation_calibration.png", "validation_confusion_matrix.png", "test_roc.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == ["benign", "malignant"] and meta["image_size"] == 224
    assert 0 < meta["uncertain_threshold"] <= meta["threshold"] < 1
    assert meta["temperature"] > 0
    # calibrated on the scores of the export that serves it, not on the Keras model training held
    assert meta["calibration_fit"]["runtime"] == "litert" and meta["calibration_fit"]["views"] == ["id"]
    assert meta["calibration_fit"]["command"] == "manage.py train_model"
    metrics = json.loads((out / "metrics.json").read_text())
    # served as by default: the first look alone (SKINCARE_CLOSE_CALL_CHECK off)
    assert metrics["scored_with"] == {"runtime": "litert", "views": ["id"], "close_call_check": False}
    assert metrics["validation"]["sensitivity"] >= 0.90  # the threshold rule, on the split it was chosen on
    if "close_call_check" in meta:  # kept only where, checked, it keeps the thresholds' promises on validation
        check = meta["close_call_check"]
        assert check["validation_sensitivity"] >= 0.90
        assert check["validation_flagged_share_of_malignant"] >= 0.98 and check["temperature"] > 0
        # the images the note is on (one at the margin itself may fall either side of float rounding)
        assert 0 < check["validation_checked"] == pytest.approx(meta["boundary_margin"]["validation_noted"], abs=0.01)
    assert len(metrics["history"]["loss"]) == 3 + 1
    splits = json.loads((out / "splits.json").read_text())
    assert splits["test"] and not set(splits["test"]) & set(splits["validation"])


def test_train_model_fits_the_boundary_margin_on_the_validation_images_turned(small_model):
    """The result page's "close to a boundary" margin: what training saved is what the validation
    images, scored again through the serving path in the eight orientations, give."""
    import numpy as np

    from ml import classifier, evaluation
    from ml.datasets import read_dataset
    from ml.splits import held_out, recorded_splits

    ham, out = small_model
    meta = json.loads((out / "metadata.json").read_text())
    saved = meta["boundary_margin"]
    assert saved["views"] == 8 and saved["coverage_target"] == evaluation.BOUNDARY_COVERAGE
    _, val, _ = held_out(read_dataset(ham).samples, recorded_splits(out))
    p_views, _ = classifier.predict_orientations([s.path for s in val], directory=out)
    again = evaluation.fit_boundary_margin(p_views, meta["threshold"], meta["uncertain_threshold"])
    for key in ("logit", "validation_outcome_changes", "validation_noted"):
        assert saved[key] == pytest.approx(again[key], rel=1e-6, abs=1e-9), key
    if saved["validation_outcome_changes"]:
        assert saved["validation_changes_noted"] >= evaluation.BOUNDARY_COVERAGE
        noted = [classifier.is_near_boundary(p, meta["threshold"], meta["uncertain_threshold"], meta) for p in p_views[:, 0]]
        assert np.mean(noted) == pytest.approx(saved["validation_noted"])


@pytest.mark.parametrize("split", ["test", "validation"])
@pytest.mark.parametrize("runtime, swapped_pairs, ece_tolerance", [("litert", 0, 1e-9), ("keras", 2, 0.02)])
def test_evaluate_model_reproduces_the_training_scores(small_model, tmp_path, runtime, swapped_pairs, ece_tolerance,
                                                       split):
    """The serving path (ml.classifier + ml.preprocessing) scores the held-out images as
    training's figures say: exactly with the LiteRT export that serves (training calibrated
    on its scores and wrote metrics.json from them), and within float16 rounding with the
    Keras model. Training and serving cannot drift apart. (AUC and ECE are steps: on this
    small split's few dozen images, float16 rounding may swap the order of two nearly equal
    scores, which moves the AUC by 1 / (malignant x benign) a pair, about 0.006 here, or move
    one image across an ECE bin edge, about 0.01.)"""
    ham, out = small_model
    report = tmp_path / "eval.json"
    call_command("evaluate_model", str(ham), "--model", str(out), "--split", split, "--json", str(report),
                 "--bootstrap", "50", "--runtime", runtime)
    evaluated = json.loads(report.read_text())
    trained = json.loads((out / "metrics.json").read_text())[split]
    assert evaluated["n"] == trained["n"]
    pairs = evaluated["n_malignant"] * (evaluated["n"] - evaluated["n_malignant"])
    assert evaluated["auc"] == pytest.approx(trained["auc"], abs=swapped_pairs / pairs + 1e-9)
    assert evaluated["ece"] == pytest.approx(trained["ece"], abs=ece_tolerance)
    if runtime == "litert":
        for key in ("sensitivity", "specificity", "flagged_share_of_malignant"):
            assert evaluated[key] == pytest.approx(trained[key], abs=1e-9), key
    for key in ("n_malignant", "auc_ci95", "accuracy", "balanced_accuracy", "specificity",
                "specificity_at_sensitivity_0.95"):
        assert key in evaluated


def test_calibrate_model_refits_for_the_views_serving_averages(small_model, tmp_path):
    """calibrate_model: with the image as it is, it finds again exactly what training fitted
    (both fit on the served runtime's scores); with the eight views, serving averages them,
    the saved threshold keeps its promise on the validation split it was chosen on, and
    metrics.json is rewritten from the same scores."""
    import shutil

    from django.core.management.base import CommandError

    ham, trained = small_model
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    before = json.loads((out / "metadata.json").read_text())
    call_command("calibrate_model", str(ham), "--model", str(out), "--views", "none")
    same = json.loads((out / "metadata.json").read_text())
    assert same["tta_views"] == ["id"]
    for key in ("temperature", "logit_offset", "threshold", "uncertain_threshold"):
        assert same[key] == pytest.approx(before[key], rel=1e-9), key
    assert same["calibration_fit"]["command"].endswith("--views none")
    assert same["boundary_margin"]["logit"] == pytest.approx(before["boundary_margin"]["logit"], rel=1e-9)

    call_command("calibrate_model", str(ham), "--model", str(out))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tta_views"] == ["id", "h", "v", "hv", "t", "th", "tv", "thv"]
    # the eight views averaged answer the same however the photo is turned: no result is close to a boundary
    assert meta["boundary_margin"]["logit"] == 0.0 and meta["boundary_margin"]["rule"].startswith("exact")
    assert 0 < meta["uncertain_threshold"] <= meta["threshold"] < 1
    report = tmp_path / "val.json"
    call_command("evaluate_model", str(ham), "--model", str(out), "--split", "validation", "--json", str(report),
                 "--bootstrap", "20")
    validation = json.loads(report.read_text())
    assert validation["sensitivity"] >= 0.90
    assert validation["auc"] == pytest.approx(meta["calibration_fit"]["validation_auc"], abs=1e-9)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored_with"]["views"] == meta["tta_views"]
    assert metrics["validation"]["sensitivity"] == pytest.approx(validation["sensitivity"], abs=1e-9)
    assert metrics["history"] == json.loads((trained / "metrics.json").read_text())["history"]  # kept

    # Another dataset than the model's: refused, and the metadata and metrics left as they were.
    with pytest.raises(CommandError, match="validation images are not in"):
        call_command("calibrate_model", str(ham.parent / "ph2"), "--model", str(out))
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_train_model_refuses_an_unknown_folder(tmp_path):
    from django.core.management.base import CommandError

    (tmp_path / "random.txt").write_text("x")
    with pytest.raises(CommandError):
        call_command("train_model", str(tmp_path), "--output", str(tmp_path / "out"))


@pytest.fixture(scope="module")
def imagenet_lower_weights():
    from ml.training import Network, TrainConfig

    return Network(TrainConfig(dataset="unused")).lower.get_weights()


def _saved_lower_weights(out):
    import keras

    return keras.models.load_model(out / "model.keras", compile=False).get_layer("lower").get_weights()


def test_upper_scope_leaves_the_cached_blocks_as_imagenet_made_them(small_model, imagenet_lower_weights):
    """The default scope trains from cached maps of the lower blocks, so they must be exactly ImageNet's."""
    import numpy as np

    _ham, out = small_model
    saved = _saved_lower_weights(out)
    assert len(saved) == len(imagenet_lower_weights)
    assert all(np.array_equal(a, b) for a, b in zip(saved, imagenet_lower_weights))
    phases = json.loads((out / "metrics.json").read_text())["phases"]
    assert phases["finetune_scope"] == "upper" and phases["kept"] in ("frozen", "finetuned")


@pytest.mark.parametrize("average", [False, True], ids=["last-weights", "averaged-weights"])
def test_finetune_all_trains_every_block_from_augmented_images(imagenet_lower_weights, average):
    """--finetune-scope all: the lower blocks (frozen and cached in the default scope) learn too."""
    import numpy as np

    from ml.training import Network, TrainConfig, build_augmenter, finetune_all

    config = TrainConfig(dataset="unused", finetune_scope="all", finetune_epochs=1, finetune_learning_rate=1e-3,
                         batch_size=8, average_weights=average)
    net = Network(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8)
    y = np.array([0, 1] * 8)
    history = finetune_all(net, config, x, y, x[:4], y[:4], build_augmenter(0), log=lambda m: None)
    assert len(history["loss"]) == 1 and len(history["val_auc"]) == 1
    pairs = list(zip(net.lower.get_weights(), imagenet_lower_weights))
    kernels = [(a, b) for a, b in pairs if a.ndim == 4]
    assert len(kernels) >= 20  # the stem and blocks 0-7: expand, depthwise and project convolutions
    assert all(not np.array_equal(a, b) for a, b in kernels)
    # BatchNormalization stays in inference mode (its statistics and scale are ImageNet's)
    assert all(np.array_equal(a, b) for a, b in pairs if a.ndim == 1)


def test_mixup_blends_each_image_and_its_labels_with_one_weight():
    """mixup_batch: image i becomes w * image i + (1 - w) * image n-1-i, and every label tensor of it the
    same with the same w; the labels stay distributions; the same seed gives the same batch, another not."""
    import numpy as np
    import tensorflow as tf

    from ml.training import mixup_batch

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (7, 4, 4, 3)).astype(np.float32)
    head = np.eye(2, dtype=np.float32)[[0, 1, 1, 0, 1, 0, 1]]
    dx = np.eye(3, dtype=np.float32)[[0, 1, 2, 2, 1, 0, 1]]
    seed = tf.constant([3, 4], tf.int64)
    images, labels = mixup_batch(tf.constant(x), {"head": tf.constant(head), "dx": tf.constant(dx)}, seed, 0.4)
    images, head_out, dx_out = images.numpy(), labels["head"].numpy(), labels["dx"].numpy()

    partner = x[::-1]
    weights = []
    for i in range(7):
        if i == 3:  # the middle image is its own partner
            np.testing.assert_allclose(images[i], x[i], rtol=1e-5)
            continue
        # the one weight that explains the image explains both label tensors
        d = (x[i] - partner[i]).ravel()
        w = float(np.dot(images[i].ravel() - partner[i].ravel(), d) / np.dot(d, d))
        assert 0.0 <= w <= 1.0
        np.testing.assert_allclose(images[i], w * x[i] + (1 - w) * partner[i], atol=1e-2)
        np.testing.assert_allclose(head_out[i], w * head[i] + (1 - w) * head[::-1][i], atol=1e-4)
        np.testing.assert_allclose(dx_out[i], w * dx[i] + (1 - w) * dx[::-1][i], atol=1e-4)
        weights.append(w)
    np.testing.assert_allclose(head_out.sum(axis=1), 1.0, rtol=1e-6)
    assert len({round(w, 4) for w in weights}) == len(weights)  # a weight per image, not one per batch
    assert any(0.05 < w < 0.95 for w in weights)  # Beta(0.4, 0.4): blends, not only copies

    again, _ = mixup_batch(tf.constant(x), {"head": tf.constant(head)}, seed, 0.4)
    other, _ = mixup_batch(tf.constant(x), {"head": tf.constant(head)}, tf.constant([5, 6], tf.int64), 0.4)
    np.testing.assert_array_equal(again.numpy(), images)
    assert not np.allclose(other.numpy(), images)


@pytest.mark.parametrize("mixup, share", [(0.0, 0.5), (0.2, 0.5), (0.0, 0.25)], ids=["plain", "mixup", "share"])
def test_phase_2_batches_are_balanced_and_blended_only_with_mixup(mixup, share):
    import numpy as np

    from ml.training import TrainConfig, _onehot, balanced_batches, build_augmenter

    config = TrainConfig(dataset="unused", finetune_scope="all", batch_size=16, mixup=mixup, malignant_share=share)
    x = np.random.default_rng(0).integers(0, 255, (40, 224, 224, 3), dtype=np.uint8)
    y = np.array([0] * 32 + [1] * 8)
    labels = list(balanced_batches(config, x, y, _onehot(y), build_augmenter(0)).take(8).map(lambda _x, t: t))
    malignant = np.concatenate([t.numpy()[:, 1] for t in labels])
    soft = (malignant > 1e-3) & (malignant < 1 - 1e-3)
    if mixup:
        assert soft.mean() > 0.2 and 0 <= malignant.min() and malignant.max() <= 1
    else:
        assert not soft.any()
        # the share asked for (half by default, the original's balancing), though a fifth of the images are
        # malignant: 128 draws, so +-0.1 is about 2.5 standard deviations
        assert abs(malignant.mean() - share) < 0.1


def test_malignant_share_trains_only_in_the_full_recipe():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--malignant-share .* --finetune-scope all"):
        call_command("train_model", "nowhere", "--malignant-share", "0.3")
    for bad in ("0", "1", "-0.2"):
        with pytest.raises(CommandError, match=f"--malignant-share is a share of each batch, between 0 and 1, not {bad}"):
            call_command("train_model", "nowhere", "--finetune-scope", "all", "--malignant-share", bad)


def test_calibration_undoes_the_share_phase_2_trained_on():
    from ml.calibration import training_prior

    counted = {"n": 100, "n_malignant": 52, "benign_views": 2, "malignant_views": 11}
    assert training_prior({"data": {"training_views": counted}}) == 0.52  # models trained before the setting
    assert training_prior({"data": {"training_views": {**counted, "phase2_malignant_share": 0.3}}}) == 0.3
    assert training_prior({"data": {"training_views": {"n": 10, "n_malignant": 2, "balanced_batches": True}}}) == 0.5


def test_train_model_with_a_malignant_share(ham10000_root, tmp_path, small_training_cache):
    """--malignant-share 0.3: phase 2's batches are 0.3 malignant, the metadata says so, calibration moves
    that prior (not the cached views') to the validation split's, and the model card names the setting."""
    import math

    from ml import model_card

    from .conftest import train_small_model

    out = train_small_model(ham10000_root, tmp_path / "model", small_training_cache, "--finetune-scope", "all",
                            "--malignant-share", "0.3")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["malignant_share"] == 0.3
    kept = json.loads((out / "metrics.json").read_text())["phases"]["kept"]
    validation = meta["data"]["validation"]
    val_prior = validation["n_malignant"] / validation["n"]
    if kept == "finetuned":
        assert meta["data"]["training_views"]["phase2_malignant_share"] == 0.3
        trained_prior = 0.3
    else:  # phase 1's head was kept: its prior is the cached views'
        assert "phase2_malignant_share" not in meta["data"]["training_views"]
        views = meta["data"]["training_views"]
        trained_prior = views["n_malignant"] / views["n"]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert meta["logit_offset"] == pytest.approx(logit(val_prior) - logit(trained_prior))
    card = model_card.render(out)
    assert "--finetune-scope all" in card and "--malignant-share 0.3" in card
    assert "each batch 0.3 malignant, sampled per class" in card


def test_a_training_fraction_shrinks_only_the_training_split(ham10000_root):
    """--train-fraction: a learning curve's point trains on part of the training split and is judged on the
    full run's validation and test images, so its figures compare with the full run's."""
    from ml.datasets import read_dataset
    from ml.training import TrainConfig, split_for_training

    report = read_dataset(ham10000_root)
    full_train, full_val, full_test, _ = split_for_training(report, TrainConfig(dataset=str(ham10000_root)))
    half_train, half_val, half_test, note = split_for_training(
        report, TrainConfig(dataset=str(ham10000_root), train_fraction=0.5))
    assert half_val == full_val and half_test == full_test
    # the same validation and test images as the shipped model (same recipe and seed): its learning curve's 1.0 point
    from django.conf import settings

    from ml.splits import recorded_splits

    held = recorded_splits(Path(settings.BASE_DIR) / "ml" / "artifacts" / "model")
    assert {s.path.name for s in half_val} == held["validation"] and {s.path.name for s in half_test} == held["test"]
    assert {s.path for s in half_train} < {s.path for s in full_train}
    assert len(half_train) == pytest.approx(len(full_train) / 2, abs=2)
    malignant = lambda samples: sum(s.label for s in samples)  # noqa: E731
    assert malignant(half_train) == pytest.approx(malignant(full_train) / 2, abs=1)
    assert f"training on {len(half_train)} of the training split's {len(full_train)} images" in note
    quarter_train = split_for_training(report, TrainConfig(dataset=str(ham10000_root), train_fraction=0.25))[0]
    assert {s.path for s in quarter_train} < {s.path for s in half_train}


def test_train_model_refuses_a_training_fraction_outside_0_to_1():
    from django.core.management.base import CommandError

    for bad in ("0", "1.5"):
        with pytest.raises(CommandError, match=f"--train-fraction is a share of the training split.* not {bad}"):
            call_command("train_model", "nowhere", "--train-fraction", bad)


def test_the_model_card_names_a_training_fraction():
    from ml import model_card

    meta = {"training": {"finetune_scope": "all", "finetune_epochs": 18, "finetune_learning_rate": 1e-4,
                         "patience": 5, "average_weights": True}}
    assert "--train-fraction" not in model_card._train_command(meta)
    meta["training"]["train_fraction"] = 0.5
    assert model_card._train_command(meta).endswith("--average-weights --train-fraction 0.5")


def test_mixup_trains_only_in_the_full_recipe():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--mixup .* --finetune-scope all"):
        call_command("train_model", "nowhere", "--mixup", "0.2")
    with pytest.raises(CommandError, match="--mixup is the Beta distribution's alpha.* not -1"):
        call_command("train_model", "nowhere", "--finetune-scope", "all", "--mixup", "-1")


def test_the_model_card_names_mixup():
    from ml import model_card

    meta = {"training": {"finetune_scope": "all", "finetune_epochs": 18, "finetune_learning_rate": 1e-4,
                         "patience": 5, "average_weights": True, "mixup": 0.2, "epochs": 20, "learning_rate": 1e-3},
            "data": {"training_views": {"benign_views": 2, "malignant_views": 11}}}
    assert model_card._train_command(meta).endswith("--patience 5 --average-weights --mixup 0.2")
    assert any("Mixup in phase 2 (`--mixup 0.2`)" in line and "Beta(0.2, 0.2)" in line
               for line in model_card._training_lines(meta, {}))
    assert not any("--malignant-share" in line for line in model_card._training_lines(meta, {}))
    meta["training"]["malignant_share"] = 0.3
    assert model_card._train_command(meta).endswith("--mixup 0.2 --malignant-share 0.3")
    del meta["training"]["mixup"]
    assert "mixup" not in model_card._train_command(meta).lower()
    assert not any("mixup" in line.lower() for line in model_card._training_lines(meta, {}))


def test_averaged_weights_are_validated_and_kept():
    """Scope "all" validates an exponential moving average of the weights and ends on the best one."""
    import keras
    import numpy as np

    from ml import evaluation
    from ml.training import _onehot, averaged_weights, predict_images

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=64) > 0).astype(int)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy")
    start = [w.copy() for w in model.get_weights()]
    messages = []
    callback = averaged_weights(x, y, decay=0.9, patience=10, log=messages.append)
    history = model.fit(x, _onehot(y), batch_size=8, epochs=3, verbose=0, callbacks=[callback]).history

    assert len(history["val_auc"]) == 3 and len(messages) == 3
    assert max(history["val_auc"]) == callback.best_auc
    # the model ends on the best averaged weights, which are neither the start nor the last raw step
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), callback.best_weights))
    assert not any(np.array_equal(a, b) for a, b in zip(callback.best_weights, start))
    assert np.isclose(evaluation.roc_auc(y, predict_images(model, x)), callback.best_auc)
    assert callback.best_auc > 0.8


def test_averaged_weights_stop_after_patience_epochs_without_progress():
    import keras
    import numpy as np

    from ml.training import _onehot, averaged_weights

    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    y = np.array([0, 1] * 16)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.0), "binary_crossentropy")  # nothing moves: AUC never improves
    callback = averaged_weights(x, y, decay=0.5, patience=2, log=lambda m: None)
    history = model.fit(x, _onehot(y), batch_size=8, epochs=10, verbose=0, callbacks=[callback]).history
    assert len(history["loss"]) == 3 and callback.best_epoch == 1


def test_diagnosis_head_trains_beside_the_head_and_is_not_served(ham10000_root, tmp_path, small_training_cache):
    """--diagnosis-weight: a training-only softmax over HAM10000's dx codes shares the backbone with the
    head; its loss is weighted in, and the saved model has the head's two outputs alone."""
    import keras
    import numpy as np

    from ml.datasets import HAM_BENIGN, HAM_MALIGNANT

    from .conftest import train_small_model

    out = train_small_model(ham10000_root, tmp_path / "model", small_training_cache, "--finetune-scope", "all",
                            "--average-weights", "--diagnosis-weight", "0.5")
    meta = json.loads((out / "metadata.json").read_text())
    classes = meta["data"]["diagnosis_classes"]
    assert classes == sorted(classes) and {"mel", "nv", "bcc"} <= set(classes) <= set(HAM_BENIGN) | set(HAM_MALIGNANT)
    assert meta["training"]["diagnosis_weight"] == 0.5

    history = json.loads((out / "metrics.json").read_text())["history"]
    finetune = len(history["total_loss"])
    assert finetune == 1 and len(history["diagnosis_loss"]) == 1 and len(history["val_auc"]) == 3 + 1
    # the reported loss is the head's; the total adds the diagnosis head's, weighted
    np.testing.assert_allclose(history["total_loss"][0], history["loss"][-1] + 0.5 * history["diagnosis_loss"][0],
                               rtol=1e-3)
    assert history["diagnosis_loss"][0] > 0.1

    served = keras.models.load_model(out / "model.keras", compile=False)
    assert tuple(served.output.shape) == (None, 2)
    assert not any("diagnosis" in layer.name for layer in served.layers)

    from ml import model_card

    card = model_card.render(out)  # says what trained it, and how to train it again
    assert "training-only output learnt each training image's diagnosis (" + ", ".join(classes) + ")" in card
    assert "--average-weights --diagnosis-weight 0.5`" in card


def test_diagnosis_head_needs_finer_diagnoses_and_the_full_recipe(tmp_path):
    from pathlib import Path

    from ml.datasets import Sample
    from ml.training import TrainConfig, diagnosis_targets

    full = TrainConfig(dataset="unused", finetune_scope="all", average_weights=True, diagnosis_weight=0.5)
    folders = [Sample(Path(f"{i}.jpg"), i % 2, str(i), "folders", ("benign", "malignant")[i % 2]) for i in range(6)]
    with pytest.raises(ValueError, match="names each image's diagnosis.*'benign', 'malignant'"):
        diagnosis_targets(folders, full)
    ham = [Sample(Path(f"{i}.jpg"), int(d == "mel"), str(i), "ham10000", d) for i, d in enumerate(["nv", "mel", "bkl", "nv"])]
    classes, index = diagnosis_targets(ham, full)
    assert classes == ["bkl", "mel", "nv"] and index.tolist() == [2, 1, 0, 2]
    with pytest.raises(ValueError, match="--finetune-scope all --average-weights"):
        diagnosis_targets(ham, TrainConfig(dataset="unused", diagnosis_weight=0.5))


def test_colour_constancy_is_the_models_first_layer_and_serves(ham10000_root, tmp_path, small_training_cache):
    """--colour-constancy shades_of_grey: the layer sits inside the saved model, so the LiteRT export that
    serves and the Keras fallback both apply it (evaluate_model reproduces training's figures with each),
    and a colour cast on the image (each channel scaled) leaves the model's probability where it was."""
    import numpy as np

    from ml import model_card, preprocessing
    from ml.datasets import read_dataset
    from ml.layers import load_keras_model

    from .conftest import train_small_model

    out = train_small_model(ham10000_root, tmp_path / "model", small_training_cache,
                            "--colour-constancy", "shades_of_grey")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["colour_constancy"] == "shades_of_grey"
    model = load_keras_model(out / "model.keras")
    assert model.get_layer("lower").get_layer("colour_constancy").power == 6.0

    for runtime in ("litert", "keras"):
        report = tmp_path / f"{runtime}.json"
        call_command("evaluate_model", str(ham10000_root), "--model", str(out), "--split", "validation",
                     "--json", str(report), "--bootstrap", "20", "--runtime", runtime)
        evaluated = json.loads(report.read_text())
        trained = json.loads((out / "metrics.json").read_text())["validation"]
        assert evaluated["n"] == trained["n"]
        assert evaluated["auc"] == pytest.approx(trained["auc"], abs=0.02)

    # Half as bright, so that no channel of the tinted image reaches 255 and clips.
    images = 0.5 * np.stack([preprocessing.preprocess(s.path) for s in read_dataset(ham10000_root).samples[:4]])
    # A colour cast of the same strength: each channel scaled, the length of the light's (R, G, B) kept.
    # (Shades of grey keeps the light's strength, as Finlayson & Trezzi's does: it divides out its colour.)
    light = ((images / 255.0) ** 6).mean(axis=(1, 2), keepdims=True) ** (1 / 6)
    tint = np.array([0.75, 0.95, 0.85], dtype=np.float32)
    strength = np.linalg.norm(light, axis=-1, keepdims=True) / np.linalg.norm(light * tint, axis=-1, keepdims=True)
    tinted = (images * tint * strength).astype(np.float32)
    plain, cast = model.predict(images, verbose=0), model.predict(tinted, verbose=0)
    np.testing.assert_allclose(cast, plain, atol=2e-3)
    assert np.abs(plain[:, 1] - plain[:, 1].mean()).max() > 1e-3  # it does tell the images apart

    card = model_card.render(out)
    assert "shades-of-grey colour constancy" in card and "--colour-constancy shades_of_grey`" in card


def test_shades_of_grey_divides_out_the_illuminant(tmp_path):
    """Each channel's Minkowski 6-norm mean comes out equal; a grey image passes unchanged; a black one
    does not divide by zero; the layer survives a save and a load."""
    import keras
    import numpy as np

    from ml.layers import ShadesOfGrey, load_keras_model

    rng = np.random.default_rng(0)
    image = rng.uniform(20, 200, (2, 32, 32, 3)).astype("float32") * np.array([1.0, 0.7, 0.5], dtype="float32")
    layer = ShadesOfGrey()
    out = np.asarray(layer(image)) / 255.0
    norms = (out ** 6).mean(axis=(1, 2)) ** (1 / 6)
    np.testing.assert_allclose(norms, np.broadcast_to(norms.mean(axis=1, keepdims=True), norms.shape), rtol=1e-4)
    assert not np.allclose(out * 255.0, image, atol=1.0)
    # a tint on the same image is divided out up to the light's strength: a factor per image
    tinted = np.asarray(layer(image * np.array([0.6, 1.0, 0.8], dtype="float32"))) / 255.0
    ratio = tinted / out
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio.mean(axis=(1, 2, 3), keepdims=True), ratio.shape), rtol=1e-4)
    grey = np.full((1, 8, 8, 3), 120.0, dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(grey)), grey, rtol=1e-5)
    assert np.isfinite(np.asarray(layer(np.zeros((1, 8, 8, 3), dtype="float32")))).all()

    model = keras.Sequential([keras.Input((32, 32, 3)), ShadesOfGrey(power=4.0, name="cc")])
    model.save(tmp_path / "m.keras")
    again = load_keras_model(tmp_path / "m.keras")
    assert again.get_layer("cc").power == 4.0
    np.testing.assert_allclose(again.predict(image, verbose=0), model.predict(image, verbose=0), rtol=1e-6)


def test_train_model_with_the_lite2_backbone(ham10000_root, tmp_path, small_training_cache):
    """--backbone efficientnet-lite2 trains, exports and serves as Lite0 does; the model card names it."""
    from ml import model_card
    from ml.layers import load_keras_model

    from .conftest import train_small_model

    out = train_small_model(ham10000_root, tmp_path / "model", small_training_cache, "--backbone", "efficientnet-lite2")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["backbone"] == "efficientnet-lite2" and meta["model_version"].startswith("lite2-")
    assert (out / "model.tflite").is_file() and meta["calibration_fit"]["runtime"] == "litert"
    upper = load_keras_model(out / "model.keras").get_layer("upper")
    assert upper.get_layer("block20_project_conv").filters == 352  # Lite2's 21 blocks, not Lite0's 16
    report = tmp_path / "eval.json"
    call_command("evaluate_model", str(ham10000_root), "--model", str(out), "--split", "validation",
                 "--json", str(report), "--bootstrap", "20")
    assert json.loads(report.read_text())["auc"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["validation"]["auc"], abs=1e-9)
    card = model_card.render(out)
    assert "EfficientNet-Lite2 with ImageNet weights" in card and "--backbone efficientnet-lite2" in card
