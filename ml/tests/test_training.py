"""train_model and evaluate_model end to end on a small real subset, and the serving path
agreeing with training's own figures on the images it held out."""

import io
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from django.core.management import call_command

from ml.model.network import Network
from ml.reporting import metrics
from ml.training.config import TrainConfig
from ml.training.loop import AveragedWeights, fit_network, malignant_scores, network_spec, onehot

pytestmark = pytest.mark.django_db


def test_train_model_writes_a_complete_artifact(small_model):
    _datasets, out = small_model
    for name in (
        "model.keras",
        "model.tflite",
        "head.npz",
        "gate.npz",
        "metadata.json",
        "metrics.json",
        "splits.json",
        "accuracy_curve.png",
        "loss_curve.png",
        "validation_roc.png",
        "validation_calibration.png",
        "validation_confusion_matrix.png",
        "test_roc.png",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == ["benign", "malignant"] and meta["image_size"] == 225
    assert meta["training"]["image_size"] == 225 and "squash to 225x225" in meta["preprocessing"]
    import h5py

    with zipfile.ZipFile(out / "model.keras") as keras_file:  # the weights alone, not phase 2's optimizer state
        assert list(h5py.File(io.BytesIO(keras_file.read("model.weights.h5")), "r")) == ["layers", "vars"]
    from ml.serving.classifier import LoadedModel

    served = LoadedModel(out)  # the LiteRT export takes the side the model was trained at; its map is 8x8
    assert served.runtime.name == "litert" and served.image_size == 225
    _raw, _features, cam = served.analyse(np.full((1, 225, 225, 3), 150.0, dtype=np.float32))
    assert np.asarray(cam).shape == (1, 8, 8)
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
    # two sources, each split by its own groups: both in every split, each held-out image's source recorded
    for split in ("validation", "test"):
        assert set(splits["sources"][split].values()) == {"ham10000", "isic2017"}
        assert set(splits["sources"][split]) == set(splits[split])
    assert set(meta["data"]["by_source"]) == {"ham10000", "isic2017"}
    assert all(set(parts) == {"train", "validation", "test"} for parts in meta["data"]["by_source"].values())
    assert set(metrics["validation_by_source"]) == {"ham10000", "isic2017"}
    assert meta["training"]["datasets"] == [str(d) for d in _datasets]
    # the gate's reference holds both sources, and its limits refuse no malignant validation image
    assert set(meta["gate_fit"]["reference_by_source"]) == {"ham10000", "isic2017"}
    assert meta["gate_fit"]["validation_malignant_never_refused"] == meta["data"]["validation"]["n_malignant"]


def test_the_gate_refuses_no_malignant_validation_image(small_model):
    """What Gate.fit promises, on the real images through the serving path: every malignant image the
    limits were chosen on is assessed."""
    from ml.data.datasets import read_dataset
    from ml.data.splits import held_out, recorded_splits
    from ml.preprocessing import preprocess
    from ml.serving import classifier

    datasets, out = small_model
    _, val, _ = held_out([s for d in datasets for s in read_dataset(d).samples], recorded_splits(out))
    malignant = [s.path for s in val if s.label]
    loaded = classifier._loaded_for(out)
    refused = []
    for path in malignant:  # as classifier.predict decides
        x = preprocess(path, loaded.image_size)
        features = loaded.analyse(x[None, ...])[1]
        if not loaded.gate.decide(x, features[0]).accepted:
            refused.append(path.name)
    assert malignant and refused == []


def test_fit_gate_moves_the_gate_to_another_block_and_keeps_every_score(small_model, tmp_path):
    """A model trained with the gate at block 14's map (split_block 15, the default), re-split by fit_gate at
    block 8 and fitted on its means and spreads as the models before were: the same scores from the Keras
    model and the new LiteRT export, a gate of 80 channels that says which layer it reads, and no malignant
    validation image refused."""
    import shutil

    from ml.serving.classifier import LoadedModel

    datasets, trained = small_model
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["split_block"] == 15
    assert meta["gate_fit"] | {"layer": "block14_add", "channels": 192, "statistics": "mean"} == meta["gate_fit"]
    assert meta["litert"]["lower_channels"] == 192
    probe = np.random.default_rng(1).uniform(0, 255, (3, 225, 225, 3)).astype(np.float32)
    before = {runtime: LoadedModel(out, runtime).analyse(probe)[0] for runtime in ("litert", "keras")}
    call_command("fit_gate", *map(str, datasets), "--model", str(out), "--split-block", "8", "--statistics", "mean_std")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["split_block"] == 8 and meta["litert"]["lower_channels"] == 80
    assert meta["gate_fit"]["layer"] == "block7_add" and meta["gate_fit"]["statistics"] == "mean_std"
    assert meta["gate_fit"]["validation_malignant_never_refused"] == meta["data"]["validation"]["n_malignant"]
    for runtime, scores in before.items():
        moved = LoadedModel(out, runtime)
        assert moved.gate.reference.shape[1] == 160
        np.testing.assert_allclose(moved.analyse(probe)[0], scores, atol=1e-4)


def test_evaluate_model_pools_datasets_and_compares_on_the_split_of_the_model_that_trained_on_them(
    small_model, tmp_path
):
    """Several datasets are scored as one pooled set: the pooled test split as train_model scored it. A model
    that was never trained on a dataset held all of it out, so compare_models scores the other model's test
    part of it; with no model trained on it, there is no split to ask for."""
    from django.core.management.base import CommandError

    from ml.testing import write_standin_model

    (ham, isic2017), out = small_model
    pooled = tmp_path / "pooled.json"
    call_command(
        "evaluate_model", str(ham), str(isic2017), "--model", str(out), "--split", "test", "--json", str(pooled),
        "--bootstrap", "20",
    )  # fmt: skip
    evaluated, trained = json.loads(pooled.read_text()), json.loads((out / "metrics.json").read_text())["test"]
    assert evaluated["n"] == trained["n"] and evaluated["auc"] == pytest.approx(trained["auc"], abs=1e-9)
    assert evaluated["datasets"] == [str(ham), str(isic2017)]

    other = write_standin_model(tmp_path / "standin")  # trained on nothing here
    compared = tmp_path / "compared.json"
    call_command(
        "compare_models", str(isic2017), "--split", "test", "--model", str(other), "--model", str(out),
        "--bootstrap", "20", "--json", str(compared),
    )  # fmt: skip
    n_test = json.loads((out / "metadata.json").read_text())["data"]["by_source"]["isic2017"]["test"]["n"]
    assert json.loads(compared.read_text())["n"] == n_test
    with pytest.raises(CommandError, match="no model here was trained on isic2017"):
        call_command("evaluate_model", str(isic2017), "--model", str(other), "--split", "test")

    # a model trained on HAM10000 alone, with the same HAM10000 test images: compared on HAM10000's test split
    # (its splits.json lists no other source's images, the two-source model's does)
    ham_only = tmp_path / "ham-only"
    ham_only.mkdir()
    for f in out.iterdir():
        if f.name not in ("splits.json", "metadata.json"):
            (ham_only / f.name).symlink_to(f)
    meta = json.loads((out / "metadata.json").read_text())
    meta["data"]["datasets"] = [str(ham)]
    (ham_only / "metadata.json").write_text(json.dumps(meta))
    splits = json.loads((out / "splits.json").read_text())
    ham_test = [n for n in splits["test"] if splits["sources"]["test"][n] == "ham10000"]
    (ham_only / "splits.json").write_text(json.dumps({"validation": [], "test": ham_test}))
    call_command(
        "compare_models", str(ham), "--split", "test", "--model", str(ham_only), "--model", str(out),
        "--bootstrap", "20", "--json", str(compared),
    )  # fmt: skip
    result = json.loads(compared.read_text())
    assert result["n"] == len(ham_test) and result["difference"] == 0  # the same weights


def test_train_model_fits_the_boundary_margin_on_the_validation_images_turned(small_model):
    """The result page's "close to a boundary" margin: what training saved is what the validation
    images, scored again through the serving path in the eight orientations, give."""
    import numpy as np

    from ml.data.datasets import read_dataset
    from ml.data.splits import held_out, recorded_splits
    from ml.reporting import metrics as evaluation
    from ml.serving import classifier

    datasets, out = small_model
    meta = json.loads((out / "metadata.json").read_text())
    saved = meta["boundary_margin"]
    assert saved["views"] == 8 and saved["coverage_target"] == evaluation.BOUNDARY_COVERAGE
    _, val, _ = held_out([s for d in datasets for s in read_dataset(d).samples], recorded_splits(out))
    p_views, _ = classifier.predict_orientations([s.path for s in val], directory=out)
    again = evaluation.fit_boundary_margin(p_views, meta["threshold"], meta["uncertain_threshold"])
    for key in ("logit", "validation_outcome_changes", "validation_noted"):
        assert saved[key] == pytest.approx(again[key], rel=1e-6, abs=1e-9), key
    if saved["validation_outcome_changes"]:
        assert saved["validation_changes_noted"] >= evaluation.BOUNDARY_COVERAGE
        noted = [
            classifier.is_near_boundary(p, meta["threshold"], meta["uncertain_threshold"], meta) for p in p_views[:, 0]
        ]
        assert np.mean(noted) == pytest.approx(saved["validation_noted"])


@pytest.mark.parametrize("split", ["test", "validation"])
@pytest.mark.parametrize("runtime, swapped_pairs, crossed_bins", [("litert", 0, 0), ("keras", 2, 1)])
def test_evaluate_model_reproduces_the_training_scores(
    small_model, tmp_path, runtime, swapped_pairs, crossed_bins, split
):
    """The serving path (ml.serving.classifier + ml.preprocessing) scores the held-out images as
    training's figures say: exactly with the LiteRT export that serves (training calibrated
    on its scores and wrote metrics.json from them), and within float16 rounding with the
    Keras model. Training and serving cannot drift apart. (AUC and ECE are steps: on this
    small split's few dozen images, float16 rounding may swap the order of two nearly equal
    scores, which moves the AUC by 1 / (malignant x benign) a pair, about 0.006 here, or move
    one image across an ECE bin edge, which moves the ECE by at most 2 / n: its gap leaves one bin for another.)"""
    (ham, _), out = small_model
    report = tmp_path / "eval.json"
    call_command(
        "evaluate_model",
        str(ham),
        "--model",
        str(out),
        "--split",
        split,
        "--json",
        str(report),
        "--bootstrap",
        "50",
        "--runtime",
        runtime,
    )
    evaluated = json.loads(report.read_text())
    trained = json.loads((out / "metrics.json").read_text())[f"{split}_by_source"]["ham10000"]  # HAM10000's part
    assert evaluated["n"] == trained["n"]
    pairs = evaluated["n_malignant"] * (evaluated["n"] - evaluated["n_malignant"])
    assert evaluated["auc"] == pytest.approx(trained["auc"], abs=swapped_pairs / pairs + 1e-9)
    assert evaluated["ece"] == pytest.approx(trained["ece"], abs=2 * crossed_bins / evaluated["n"] + 1e-9)
    if runtime == "litert":
        for key in ("sensitivity", "specificity", "flagged_share_of_malignant"):
            assert evaluated[key] == pytest.approx(trained[key], abs=1e-9), key
    for key in (
        "n_malignant",
        "auc_ci95",
        "accuracy",
        "balanced_accuracy",
        "specificity",
        "specificity_at_sensitivity_0.95",
    ):
        assert key in evaluated


def test_calibrate_model_refits_for_the_views_serving_averages(small_model, tmp_path):
    """calibrate_model: with the image as it is, it finds again exactly what training fitted
    (both fit on the served runtime's scores); with the eight views, serving averages them,
    the saved threshold keeps its promise on the validation split it was chosen on, and
    metrics.json is rewritten from the same scores."""
    import shutil

    from django.core.management.base import CommandError

    (ham, isic2017), trained = small_model
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    before = json.loads((out / "metadata.json").read_text())
    call_command("calibrate_model", str(ham), str(isic2017), "--model", str(out), "--views", "none")
    same = json.loads((out / "metadata.json").read_text())
    assert same["tta_views"] == ["id"]
    for key in ("temperature", "logit_offset", "threshold", "uncertain_threshold"):
        assert same[key] == pytest.approx(before[key], rel=1e-9), key
    assert same["calibration_fit"]["command"].endswith("--views none")
    assert same["boundary_margin"]["logit"] == pytest.approx(before["boundary_margin"]["logit"], rel=1e-9)

    call_command("calibrate_model", str(ham), str(isic2017), "--model", str(out))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tta_views"] == ["id", "h", "v", "hv", "t", "th", "tv", "thv"]
    # the eight views averaged answer the same however the photo is turned: no result is close to a boundary
    assert meta["boundary_margin"]["logit"] == 0.0 and meta["boundary_margin"]["rule"].startswith("exact")
    assert 0 < meta["uncertain_threshold"] <= meta["threshold"] < 1
    report = tmp_path / "val.json"
    call_command(
        "evaluate_model",
        str(ham),
        "--model",
        str(out),
        "--split",
        "validation",
        "--json",
        str(report),
        "--bootstrap",
        "20",
    )
    validation = json.loads(report.read_text())  # HAM10000's part of the validation split
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["sensitivity"] >= 0.90  # the pooled split the threshold was chosen on
    assert metrics["scored_with"]["views"] == meta["tta_views"]
    for key in ("auc", "sensitivity", "specificity"):
        assert metrics["validation_by_source"]["ham10000"][key] == pytest.approx(validation[key], abs=1e-9), key
    assert metrics["history"] == json.loads((trained / "metrics.json").read_text())["history"]  # kept

    # Another dataset than the model's: refused, and the metadata and metrics left as they were.
    with pytest.raises(CommandError, match="validation images are not in"):
        call_command("calibrate_model", str(ham), "--model", str(out))  # isic2017's are missing
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_train_model_refuses_an_unknown_folder(tmp_path):
    from django.core.management.base import CommandError

    (tmp_path / "random.txt").write_text("x")
    with pytest.raises(CommandError):
        call_command("train_model", str(tmp_path), "--output", str(tmp_path / "out"))


@pytest.fixture(scope="module")
def imagenet_lower_weights():
    return Network(network_spec(TrainConfig(datasets=["unused"]))).lower.get_weights()


def test_fine_tuning_trains_every_block_from_augmented_images(imagenet_lower_weights):
    """Phase 2: the lower blocks learn too; BatchNormalization stays in inference mode."""
    config = TrainConfig(datasets=["unused"], epochs=1, finetune_epochs=1, finetune_learning_rate=1e-3, batch_size=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8)
    y = np.array([0, 1] * 8)
    net, record = fit_network(config, x, y, x[:4], y[:4], log=lambda m: None)
    assert len(record["history"]["val_auc"]) == 2  # phase 1's epoch, phase 2's
    # whichever phase was kept, phase 2 trained the lower blocks: check the weights it ended on
    if record["phases"]["kept"] == "frozen":
        pytest.skip("phase 1 won on four validation images; the weights shown are phase 1's")
    pairs = list(zip(net.lower.get_weights(), imagenet_lower_weights))
    kernels = [(a, b) for a, b in pairs if a.ndim == 4]
    assert len(kernels) >= 20  # the stem and blocks 0-7: expand, depthwise and project convolutions
    assert all(not np.array_equal(a, b) for a, b in kernels)
    assert all(np.array_equal(a, b) for a, b in pairs if a.ndim == 1)


def _small_model_with_ema(decay_steps: int):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=1.0 - 1.0 / decay_steps), "binary_crossentropy")
    return model


def test_averaged_weights_are_validated_and_kept():
    """Phase 2 validates the optimizer's moving average of the weights and ends on the best one."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=64) > 0).astype(int)
    model = _small_model_with_ema(8)
    start = [w.copy() for w in model.get_weights()]
    messages = []
    callback = AveragedWeights(x, y, patience=10, log=messages.append)
    model.fit(x, onehot(y), batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    assert len(callback.history["val_auc"]) == 3 and len(messages) == 3
    assert max(callback.history["val_auc"]) == callback.best_auc
    # the model ends on the best averaged weights, which are neither the start nor the last raw step
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), callback.best_weights))
    assert not any(np.array_equal(a, b) for a, b in zip(callback.best_weights, start))
    assert np.isclose(metrics.roc_auc(y, malignant_scores(model, x)), callback.best_auc)
    assert callback.best_auc > 0.8


def test_averaged_weights_stop_after_patience_epochs_without_progress():
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    y = np.array([0, 1] * 16)
    model = _small_model_with_ema(2)
    model.optimizer.learning_rate.assign(0.0)  # nothing moves: the AUC never improves
    callback = AveragedWeights(x, y, patience=2, log=lambda m: None)
    model.fit(x, onehot(y), batch_size=8, epochs=10, verbose=0, callbacks=[callback])
    assert len(callback.history["loss"]) == 3 and callback.best_epoch == 1


def test_each_source_is_split_by_its_own_groups(ham10000_root, datasets_root):
    """train_model DS [DS ...]: HAM10000's test split stays the ISIC 2018 test set; every other source keeps
    a held-out test part; patients (isic2020) and lesions never straddle two splits."""
    from ml.data.datasets import read_dataset
    from ml.training.trainer import source_of, split_for_training

    roots = [ham10000_root, datasets_root / "isic2020", datasets_root / "isic2017"]
    if not all(r.is_dir() for r in roots):
        pytest.skip("the ISIC collections are not in the shared datasets")
    reports = [read_dataset(r) for r in roots]
    train, val, test, note = split_for_training(reports, TrainConfig(datasets=[str(r) for r in roots]))
    assert len(train) + len(val) + len(test) == sum(len(r.samples) for r in reports)
    parts = {"train": train, "validation": val, "test": test}
    for source in ("ham10000", "isic2020", "isic2017"):
        counts = {name: sum(source_of(s) == source for s in part) for name, part in parts.items()}
        assert all(counts.values()), (source, counts)
        if source != "ham10000":
            total = sum(counts.values())
            assert abs(counts["test"] / total - 0.15) < 0.03 and abs(counts["validation"] / total - 0.15) < 0.03
    assert {s.source for s in test if source_of(s) == "ham10000"} == {"isic2018_test"}
    side = {}
    for name, part in parts.items():
        for sample in part:
            assert side.setdefault(sample.group, name) == name, sample.group  # a group on one side only
    patients = {s.group for s in test if s.source == "isic2020"}
    assert 5 <= len(patients) <= 30 and any(s.label for s in test if s.source == "isic2020")
    assert "isic2020: split by group" in note


def test_balanced_batches_weigh_each_source_by_the_square_root_of_its_images():
    from ml.training.batches import balanced_indices, source_weights

    assert source_weights({"big": 400, "small": 25}) == pytest.approx({"big": 0.8, "small": 0.2})
    y = np.array([0] * 300 + [1] * 400 + [1] * 25)
    sources = np.array(["big"] * 700 + ["small"] * 25)
    batches = balanced_indices(y, 32, seed=0, sources=sources)
    picks = np.concatenate([next(batches) for _ in range(200)])
    assert (y[picks] == 1).mean() == pytest.approx(0.5)
    malignant = picks[y[picks] == 1]
    assert (sources[malignant] == "small").mean() == pytest.approx(0.2, abs=0.02)
    # without sources, one pool per class, as before
    assert (y[next(balanced_indices(y, 32, seed=0))] == 1).sum() == 16


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """--resume DIR: phase 1 and every finished phase-2 epoch are saved; a run killed after epoch 1 goes on
    from epoch 2 with the same weights, optimizer state and best-so-far record, and ends as a whole run does."""
    from ml.training import loop
    from ml.training.checkpoints import Checkpoints

    config = TrainConfig(
        datasets=["unused"],
        epochs=1,
        finetune_epochs=2,
        finetune_learning_rate=1e-3,
        batch_size=8,
        patience=5,
        resume=str(tmp_path / "run"),
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8)
    y = np.array([0, 1] * 8)
    original = loop.SaveEpochs.on_epoch_end

    def killed_after_saving(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt  # the session ends here

    monkeypatch.setattr(loop.SaveEpochs, "on_epoch_end", killed_after_saving)
    # the first session splits the network where the gate read before (block 8), the second at the default
    first = TrainConfig(**{**config.__dict__, "split_block": 8})
    with pytest.raises(KeyboardInterrupt):
        fit_network(first, x, y, x[:4], y[:4], checkpoints=Checkpoints(first.resume, first), log=lambda m: None)
    saved, state = Checkpoints(config.resume, config).last_epoch()
    assert state["epochs_done"] == 1 and len(state["history"]["val_auc"]) == 1
    first_session = state["seconds"]
    monkeypatch.setattr(loop.SaveEpochs, "on_epoch_end", original)

    messages = []
    net, record = fit_network(
        config, x, y, x[:4], y[:4], checkpoints=Checkpoints(config.resume, config), log=messages.append
    )
    assert any("phase 1 resumed" in m for m in messages) and any(
        "resumed from" in m and "after epoch 1" in m for m in messages
    )
    assert len(record["history"]["val_auc"]) == 1 + 2  # phase 1's epoch, then phase 2's first (saved) and second
    _, state = Checkpoints(config.resume, config).last_epoch()
    assert state["epochs_done"] == 2
    # the optimizer went on counting its steps: 2 epochs of 2 batches
    assert int(net.model.optimizer.iterations.numpy()) == 4
    # the time is the whole run's: phase 1 and the first session's epoch are counted in
    seconds = record["seconds"]
    assert seconds["resumed_after_epoch"] == 1 and seconds["phase2_finetune"] > first_session > 0
    assert seconds["earlier_sessions"] == pytest.approx(
        seconds["cache_features"] + seconds["phase1_head"] + first_session, abs=0.2
    )
    assert seconds["total"] >= seconds["earlier_sessions"] + seconds["phase2_finetune"] - first_session
    # another recipe in the same folder is refused, not mixed
    with pytest.raises(ValueError, match="holds a run with other settings \\(finetune_learning_rate\\)"):
        Checkpoints(config.resume, TrainConfig(**{**config.__dict__, "finetune_learning_rate": 1e-4}))
    # a settings file that still records the split (written before split_block was left out) goes on too
    settings = Path(config.resume) / "settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "split_block": 8}))
    Checkpoints(config.resume, TrainConfig(**{**config.__dict__, "split_block": 15}))


def test_a_two_source_models_gate_and_card_are_reported_per_source(small_model, tmp_path, datasets_root):
    """evaluate_gate on a model trained on two sources reports each held-out test part and PH2 with the
    malignant images it refused; the card then has a row per source, the sources table and the musts."""
    import shutil

    from django.test import override_settings

    from ml.reporting import model_card
    from ml.reporting.junk import DEBIAN_HELD_OUT_PHOTOS, debian_photos
    from ml.serving import classifier

    (ham, isic2017), trained = small_model
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    (out / "evaluation").mkdir()
    with override_settings(SKINCARE_MODEL_DIR=str(out)):
        classifier.reset()
        try:
            call_command(
                "evaluate_gate", "--datasets", str(datasets_root), "--spoiled", "2",
                "--json", str(out / "evaluation" / "gate.json"),
            )  # fmt: skip
        finally:
            classifier.reset()
    gate = json.loads((out / "evaluation" / "gate.json").read_text())
    meta = json.loads((out / "metadata.json").read_text())
    assert list(gate["lesions"]) == ["ham10000", "isic2017", "ph2"]
    for name in ("ham10000", "isic2017"):
        r = gate["lesions"][name]
        assert (r["n"], r["n_malignant"]) == (
            meta["data"]["by_source"][name]["test"]["n"],
            meta["data"]["by_source"][name]["test"]["n_malignant"],
        )
        assert len(r["malignant_refused"]) <= r["n_malignant"] and r["accepted"] <= r["n"]
    assert gate["lesions"]["ph2"]["n"] == 200 and gate["ham10000_test"] == gate["lesions"]["ham10000"]
    held_out = gate["held_out_photos"]  # opencv-doc's photos that chose nothing (none where it is absent)
    assert held_out["n"] == len(debian_photos(photos=DEBIAN_HELD_OUT_PHOTOS))
    assert sum(row["n"] for row in held_out["by_category"].values()) == held_out["n"]
    assert held_out["refused"] + len(held_out["accepted"]) == held_out["n"]

    call_command(
        "evaluate_model", str(isic2017), "--model", str(out), "--split", "test", "--bootstrap", "20",
        "--json", str(out / "evaluation" / "isic2017_test.json"),
    )  # fmt: skip
    card = model_card.render(out)
    assert "| ISIC 2017 | several clinics in the ISIC archive |" in card  # the sources table
    assert "| ISIC 2017, held-out test part |" in card  # the results row
    assert "| ISIC 2017, test part |" in card and "| PH2 (all) |" in card  # the gate's rows
    assert "| ISIC 2017 held-out test AUC | >= 0.8 |" in card  # a must
    assert "### Musts (a model that misses one does not ship)" in card
    assert "CC BY-NC 4.0" in card and "Platt scaling" in card
    assert "the per-channel mean of the backbone's `block14_add` map (192 channels)" in card  # what the gate measures
    assert "input 225x225x3 RGB; every stride-2 layer's input has an odd side (225 = 32k + 1)" in card
    if held_out["n"]:
        assert (
            f"Held-out ordinary photos (never used to choose anything about the gate) ({held_out['source']}): " in card
        )
