"""average_models: the weights of runs fine-tuned from the same start, averaged into one model
that is then fitted, exported, calibrated and reported like a trained one (ml/soup.py)."""
import json
import shutil

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ml.soup import SoupError, averaged_weights, check_compatible


@pytest.fixture(scope="module")
def perturbed_small_model(small_model, tmp_path_factory):
    """The small model with every weight moved by up to a few percent: another model from the same
    start, as a run with another --finetune-seed would be (a real one costs a full training)."""
    import keras

    _, model = small_model
    out = tmp_path_factory.mktemp("perturbed") / "model"
    shutil.copytree(model, out)
    network = keras.models.load_model(out / "model.keras", compile=False)
    rng = np.random.default_rng(0)
    network.set_weights([w * (1 + 0.03 * rng.standard_normal(w.shape)).astype(w.dtype) for w in network.get_weights()])
    network.save(out / "model.keras")
    return out


def _weights(folder):
    import keras

    return keras.models.load_model(folder / "model.keras", compile=False).get_weights()


def test_average_models_writes_a_calibrated_model_whose_weights_are_the_mean(small_model, perturbed_small_model, tmp_path):
    ham, short = small_model
    out = tmp_path / "average"
    call_command("average_models", str(ham), str(short), str(perturbed_small_model), "--output", str(out))

    a, b, averaged = _weights(short), _weights(perturbed_small_model), _weights(out)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))  # two different models went in
    for x, y, z in zip(a, b, averaged):
        np.testing.assert_allclose(z, (x.astype(np.float64) + y) / 2, rtol=1e-6, atol=1e-7)

    for name in ("model.tflite", "head.npz", "gate.npz", "splits.json", "validation_roc.png", "test_roc.png",
                 "accuracy_curve.png", "loss_curve.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "metadata.json").read_text())
    assert [m["folder"] for m in meta["averaged_from"]] == [str(short), str(perturbed_small_model)]
    assert meta["calibration_fit"]["runtime"] == "litert"
    assert meta["calibration_fit"]["command"].startswith("manage.py average_models")
    assert meta["data"] == json.loads((short / "metadata.json").read_text())["data"]
    assert (out / "splits.json").read_text() == (short / "splits.json").read_text()
    assert meta["gate"] and meta["litert"]

    # the figures it wrote are what serving gives on the split the threshold was chosen on
    report = tmp_path / "val.json"
    call_command("evaluate_model", str(ham), "--model", str(out), "--split", "validation", "--json", str(report),
                 "--bootstrap", "20")
    evaluated = json.loads(report.read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert evaluated["auc"] == pytest.approx(metrics["validation"]["auc"], abs=1e-9)
    assert evaluated["sensitivity"] == pytest.approx(metrics["validation"]["sensitivity"], abs=1e-9)
    assert evaluated["sensitivity"] >= 0.90
    assert set(metrics["histories"]) == {"run 1", "run 2"}

    from ml import model_card

    card = model_card.render(out)  # the card says what the model is, and how long its runs took
    assert "The weights are the average of 2 runs" in card
    assert "minutes for the 2 runs" in card


def test_models_from_other_splits_or_recipes_are_refused(small_model, tmp_path):
    ham, model = small_model
    copies = {}
    for name in ("same", "other_split", "other_recipe", "other_seed"):
        copies[name] = tmp_path / name
        shutil.copytree(model, copies[name], ignore=shutil.ignore_patterns("*.png", "model.tflite", "gate.npz"))
    meta = json.loads((copies["same"] / "metadata.json").read_text())
    meta["training"]["dataset"] = meta["data"]["dataset"] = "/elsewhere/../" + meta["data"]["dataset"]
    (copies["same"] / "metadata.json").write_text(json.dumps(meta))
    assert len(check_compatible([model, copies["same"]])) == 2  # the same data, its folder spelt otherwise

    # a setting train_model gained after a model was trained compares as its default (what that model had),
    # and mixup, like the fine-tuning seed, acts after the start that averaging needs to share
    meta["training"].pop("mixup", None)
    meta["training"].pop("colour_constancy", None)
    (copies["same"] / "metadata.json").write_text(json.dumps(meta))
    assert len(check_compatible([model, copies["same"]])) == 2
    meta["training"]["mixup"] = 0.2
    (copies["same"] / "metadata.json").write_text(json.dumps(meta))
    assert len(check_compatible([model, copies["same"]])) == 2
    meta["training"]["colour_constancy"] = "shades_of_grey"
    (copies["same"] / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SoupError, match="other settings .*colour_constancy"):
        check_compatible([model, copies["same"]])
    meta["training"]["colour_constancy"] = "none"
    (copies["same"] / "metadata.json").write_text(json.dumps(meta))

    splits = json.loads((copies["other_split"] / "splits.json").read_text())
    splits["validation"] = splits["validation"][1:]
    (copies["other_split"] / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(SoupError, match="held out other images"):
        check_compatible([model, copies["other_split"]])

    for name, key, value in (("other_recipe", "dense_units", 128), ("other_seed", "seed", 7)):
        meta = json.loads((copies[name] / "metadata.json").read_text())
        meta["training"][key] = value
        (copies[name] / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(SoupError, match=f"other settings .*{key}"):
            check_compatible([model, copies[name]])

    meta = json.loads((copies["other_seed"] / "metadata.json").read_text())
    meta["training"]["seed"] = json.loads((model / "metadata.json").read_text())["training"]["seed"]
    meta["data"]["train"]["n"] += 1
    (copies["other_seed"] / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SoupError, match="other data"):
        check_compatible([model, copies["other_seed"]])

    with pytest.raises(CommandError, match="at least two"):
        call_command("average_models", str(ham), str(model), "--output", str(tmp_path / "out"))
    with pytest.raises(CommandError, match="no model.keras"):
        call_command("average_models", str(ham), str(model), str(tmp_path), "--output", str(tmp_path / "out"))
    with pytest.raises(CommandError, match="is one of the models"):
        call_command("average_models", str(ham), str(model), str(copies["same"]), "--output", str(copies["same"]))
    assert not (tmp_path / "out").exists()


def test_averaged_weights_are_the_element_wise_mean_and_refuse_other_networks():
    a = [np.array([[1.0, 2.0]], dtype=np.float32), np.array([0.0], dtype=np.float32)]
    b = [np.array([[3.0, 6.0]], dtype=np.float32), np.array([1.0], dtype=np.float32)]
    mean = averaged_weights([a, b])
    np.testing.assert_array_equal(mean[0], [[2.0, 4.0]])
    np.testing.assert_array_equal(mean[1], [0.5])
    assert mean[0].dtype == np.float32
    with pytest.raises(SoupError, match="not the same network"):
        averaged_weights([a, [b[0]]])
