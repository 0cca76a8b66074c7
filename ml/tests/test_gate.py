"""The image gate's own pieces. (The gate on real images and junk: ml/tests/test_shipped_model.py.)"""

import numpy as np
import pytest

from ml.serving.gate import quality_measures
from ml.training.gate_fitting import random_sharpness


def _lesion_like(seed=0):
    """A smooth skin-coloured image with a darker blob: enough structure to sharpen or soften."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    blob = np.exp(-(((yy - 112) ** 2 + (xx - 100) ** 2) / (2 * 40.0**2)))
    img = np.stack([200 - 90 * blob, 160 - 90 * blob, 140 - 80 * blob], axis=-1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.float32)


def test_random_sharpness_sharpens_and_softens_within_range():
    x = np.stack([_lesion_like(0), _lesion_like(1)])
    before = [quality_measures(im)["sharpness"] for im in x]
    sharper = random_sharpness(x, np.random.default_rng(0), low=2.0, high=2.01)
    softer = random_sharpness(x, np.random.default_rng(0), low=-0.8, high=-0.79)
    for i in range(2):
        assert quality_measures(sharper[i])["sharpness"] > 3 * before[i]
        assert quality_measures(softer[i])["sharpness"] < 0.5 * before[i]
    assert sharper.min() >= 0 and sharper.max() <= 255 and sharper.shape == x.shape
    # the colour of the lesion and the skin is kept: only edges change
    assert np.abs(sharper.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max() < 3


def test_random_sharpness_draws_an_amount_per_image():
    x = np.stack([_lesion_like(0)] * 4)
    out = random_sharpness(x, np.random.default_rng(3))
    sharpness = [quality_measures(im)["sharpness"] for im in out]
    assert len(set(np.round(sharpness, 3))) == 4


def _quality(rng, n, sharpness=100.0):
    return [
        {
            "brightness": 150.0 + rng.normal(0, 5),
            "contrast": 40.0 + rng.normal(0, 2),
            "dark_share": 0.01,
            "bright_share": 0.01,
            "sharpness": sharpness * (1 + 0.1 * rng.random()),
            "colourfulness": 30.0 + rng.normal(0, 2),
        }
        for _ in range(n)
    ]


def test_the_gate_is_widened_until_no_malignant_validation_image_is_refused():
    """A malignant validation image far from the reference (another dermoscope) and blurrier than any
    training image: without the labels the gate refuses it; with them, limits move just enough to take it,
    while a photo further out still is refused."""
    from ml.serving.gate import Gate

    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (400, 8))
    val = rng.normal(0, 1, (1000, 8))  # with the odd one: its 99.9th percentile is the next one down
    odd = np.full((1, 8), 4.0)  # the unfamiliar malignant lesion
    odd_quality = _quality(rng, 1, sharpness=10.0)[0]
    far = np.full((1, 8), 12.0)
    quality = _quality(rng, 400)
    plain = Gate.fit(reference, quality, np.concatenate([val, odd]))
    widened = Gate.fit(reference, quality, np.concatenate([val, odd]), odd, [odd_quality])

    image = np.full((224, 224, 3), 150, np.float32)
    assert plain.distance(odd)[0] > plain.limits["max_distance"]
    assert widened.distance(odd)[0] <= widened.limits["max_distance"]
    assert widened.distance(far)[0] > widened.limits["max_distance"]
    assert odd_quality["sharpness"] < plain.limits["min_sharpness"]
    assert odd_quality["sharpness"] > widened.limits["min_sharpness"]
    for key in ("min_brightness", "min_contrast", "min_colourfulness"):
        assert widened.limits[key] <= plain.limits[key]
    assert not widened.decide(image, far).accepted  # a uniform grey image is still refused, for its contrast


def test_the_reference_is_shared_among_the_sources_by_the_square_root_of_their_sizes():
    import random

    from ml.training.gate_fitting import reference_sample

    paths = [f"a{i}" for i in range(4000)] + [f"b{i}" for i in range(1000)] + [f"c{i}" for i in range(50)]
    sources = ["a"] * 4000 + ["b"] * 1000 + ["c"] * 50
    picked = reference_sample(paths, sources, 600, random.Random(0))
    counts = {s: sum(p.startswith(s) for p in picked) for s in "abc"}
    assert len(set(picked)) == len(picked)
    assert 35 <= counts["c"] <= 50  # the small source in (sqrt 50 of the 600 a sqrt 4000 + sqrt 1000 + sqrt 50 share)
    assert counts["a"] == pytest.approx(2 * counts["b"], rel=0.15)  # 4x the images, 2x the share
    assert sum(counts.values()) == pytest.approx(600, abs=2)
    one = reference_sample(paths[:4000], sources[:4000], 600, random.Random(0))
    assert one == random.Random(0).sample(paths[:4000], 600)  # one source: the plain sample it always was
    assert reference_sample(paths[:100], sources[:100], 600, random.Random(0)) == paths[:100]


def test_a_gate_fitted_on_means_ignores_the_spread_and_keeps_what_it_was_fitted_on(tmp_path):
    """statistics="mean": of feature_statistics' rows (means, then spreads) the gate measures the means alone,
    and says so in gate.npz; a gate.npz written before it existed is read as mean and spread."""
    from ml.serving.gate import Gate

    rng = np.random.default_rng(0)
    means = rng.normal(0, 1, (300, 6))
    reference = np.concatenate([means, np.abs(rng.normal(1, 0.1, (300, 6)))], axis=1)
    quality = _quality(rng, 300)
    validation = reference[:100] + rng.normal(0, 0.05, (100, 12))
    odd_spread = np.concatenate([means[:1], np.full((1, 6), 9.0)], axis=1)  # familiar means, unheard-of spread
    by_mean = Gate.fit(reference, quality, validation, statistics="mean")
    both = Gate.fit(reference, quality, validation)
    assert by_mean.reference.shape == (300, 6) and both.reference.shape == (300, 12)
    assert by_mean.distance(odd_spread)[0] <= by_mean.limits["max_distance"]
    assert both.distance(odd_spread)[0] > both.limits["max_distance"]
    by_mean.save(tmp_path)
    loaded = Gate.load(tmp_path, {"gate": by_mean.limits})
    assert loaded.statistics == "mean" and loaded.distance(odd_spread) == pytest.approx(by_mean.distance(odd_spread))
    with np.load(tmp_path / "gate.npz") as data:
        np.savez(tmp_path / "gate.npz", centre=data["centre"], scale=data["scale"], reference=data["reference"])
    assert Gate.load(tmp_path, {"gate": by_mean.limits}).statistics == "mean_std"
    with pytest.raises(ValueError, match="unknown gate statistics 'median'"):
        Gate.fit(reference, quality, validation, statistics="median")


def test_pixel_noise_is_refused_for_its_grain_and_a_grainy_malignant_image_widens_the_limit():
    """max_grain: GRAIN_MARGIN times the 99.8th percentile of the reference's augmented views (sharpened as other
    dermoscopes are), widened where a malignant validation image is grainier. Random pixels are refused for it;
    a lesion-like image is not; a gate fitted before the limit existed has none."""
    from ml.serving.gate import GRAIN_MARGIN, Gate

    rng = np.random.default_rng(0)
    quality = _quality(rng, 400)
    augmented = [{**q, "grain": float(g)} for q, g in zip(_quality(rng, 400), rng.uniform(0.2, 5.0, 400))]
    features, validation = rng.normal(0, 1, (400, 8)), rng.normal(0, 1, (100, 8))
    gate = Gate.fit(features, quality, validation, augmented_quality=augmented)
    assert 4.9 * GRAIN_MARGIN < gate.limits["max_grain"] <= 5.0 * GRAIN_MARGIN
    noise = rng.uniform(0, 255, (225, 225, 3)).astype(np.float32)
    decision = gate.decide(noise, None)
    assert decision.measures["grain"] > gate.limits["max_grain"] and "grainy" in decision.reason
    lesion = gate.decide(_lesion_like(0), None)  # a blob on skin, with a little sensor noise
    assert lesion.measures["grain"] < gate.limits["max_grain"] / 3 and "grainy" not in lesion.reason
    grainy_melanoma = {**_quality(rng, 1)[0], "grain": 9.0}
    widened = Gate.fit(features, quality, validation, np.zeros((1, 8)), [grainy_melanoma], augmented_quality=augmented)
    assert widened.limits["max_grain"] == pytest.approx(9.0 * GRAIN_MARGIN)
    assert "grainy" not in Gate({k: v for k, v in gate.limits.items() if k != "max_grain"}).decide(noise, None).reason


def test_the_margin_is_widened_for_a_source_the_gate_was_not_fitted_on():
    """Three sources; the third's images sit a little apart from the other two's (another dermoscope). Left out,
    it needs a wider margin than the first two do, and the margin found is the least that takes
    UNSEEN_SOURCE_ACCEPTED of its images and every malignant one, with a gate fitted on the other two."""
    from ml.serving.gate import Gate
    from ml.training.gate_fitting import UNSEEN_SOURCE_ACCEPTED, unseen_source_margins

    rng = np.random.default_rng(0)
    shift = {"a": 0.0, "b": 0.0, "c": 1.5}

    def drawn(n_each, spread=1.0):
        rows = np.concatenate([rng.normal(shift[s], spread, (n_each, 8)) for s in shift])
        return rows, np.repeat(list(shift), n_each)

    plain, plain_sources = drawn(150)
    reference = np.concatenate([plain, plain + rng.normal(0, 0.3, plain.shape)])  # as they are, then augmented
    val_plain, val_sources = drawn(200)
    val_augmented = val_plain + rng.normal(0, 0.3, val_plain.shape)
    malignant = rng.random(len(val_plain)) < 0.2
    quality = _quality(rng, len(plain))
    margins = unseen_source_margins(
        reference, plain_sources, quality, val_plain, val_augmented, val_sources, malignant, "mean_std"
    )
    assert set(margins) == {"a", "b", "c"}
    assert margins["c"] > 1.1 and margins["c"] > max(margins["a"], margins["b"]) + 0.1, margins

    # what the margin promises, checked by hand: the gate fitted without "c", at that margin, takes enough of c
    kept, others, c = np.tile(plain_sources != "c", 2), val_sources != "c", val_sources == "c"
    gate = Gate.fit(
        reference[kept], quality, np.concatenate([val_plain[others], val_augmented[others]]),
        val_plain[others & malignant], statistics="mean_std", margin=margins["c"],
    )  # fmt: skip
    accepted = gate.distance(val_plain[c]) <= gate.limits["max_distance"] * (1 + 1e-9)
    assert accepted.mean() >= UNSEEN_SOURCE_ACCEPTED and accepted[malignant[c]].all()
    slightly_less = Gate.fit(
        reference[kept], quality, np.concatenate([val_plain[others], val_augmented[others]]),
        val_plain[others & malignant], statistics="mean_std", margin=margins["c"] * 0.98,
    )  # fmt: skip
    refused = slightly_less.distance(val_plain[c]) > slightly_less.limits["max_distance"]
    assert refused.mean() > 1 - UNSEEN_SOURCE_ACCEPTED or refused[malignant[c]].any()

    ref_a, val_a = plain_sources == "a", val_sources == "a"
    only_a = unseen_source_margins(
        reference[np.tile(ref_a, 2)], plain_sources[ref_a], quality, val_plain[val_a], val_augmented[val_a],
        val_sources[val_a], malignant[val_a], "mean_std",
    )  # fmt: skip
    assert only_a == {}  # one source: nothing to leave out
