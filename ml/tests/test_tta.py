"""Test-time views (ml/serving/tta.py): exact symmetries of the square, undone exactly, averaged as documented."""

import numpy as np
import pytest

from ml.serving import tta


@pytest.fixture
def images():
    return np.random.default_rng(0).random((3, 6, 6, 3)).astype(np.float32)


def test_the_eight_views_are_the_eight_distinct_symmetries(images):
    seen = {tta.transform(images, v).tobytes() for v in tta.ALL_VIEWS}
    assert len(seen) == 8
    for v in tta.ALL_VIEWS:  # a symmetry: the same pixels, rearranged
        np.testing.assert_array_equal(np.sort(tta.transform(images, v), axis=None), np.sort(images, axis=None))


@pytest.mark.parametrize("view", tta.ALL_VIEWS)
def test_untransform_undoes_transform(images, view):
    maps = images[..., 0]
    np.testing.assert_array_equal(tta.untransform(tta.transform(maps, view), view), maps)


def test_untransform_puts_a_views_hot_spot_back_where_it_was():
    """A map computed on a view has its hot spot where the view moved the image's feature."""
    image = np.zeros((1, 5, 5, 1), dtype=np.float32)
    image[0, 0, 3] = 1.0  # row 0, column 3
    for view in tta.ALL_VIEWS:
        seen_by_view = tta.transform(image, view)[..., 0]  # a "map" that is hot where the feature is
        back = tta.untransform(seen_by_view, view)
        assert np.unravel_index(back[0].argmax(), back[0].shape) == (0, 3), view


def test_expand_is_view_major(images):
    views = ("id", "h", "t")
    out = tta.expand(images, views)
    assert out.shape == (9, 6, 6, 3)
    np.testing.assert_array_equal(out[3:6], tta.transform(images, "h"))


def test_combine_averages_scores_and_maps_before_the_relu():
    views, n = ("id", "h"), 2
    scores = np.array([1.0, -2.0, 3.0, 0.0])  # view "id": images 0, 1; view "h": images 0, 1
    cams = np.zeros((4, 2, 2), dtype=np.float32)
    cams[0] = [[1, -1], [0, 0]]
    cams[2] = [[-1, 1], [0, 0]]  # flipped back it is [[1, -1], ...]: the same map, so it survives
    cams[1] = [[2, 0], [0, 0]]
    cams[3] = [[0, -2], [0, 0]]  # flipped back: [[-2, 0], ...], cancelling image 1's hot spot
    probability, maps = tta.combine(scores, cams, views, n)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-np.array([2.0, -1.0]))))
    np.testing.assert_allclose(maps[0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(maps[1], [[0, 0], [0, 0]])


def test_views_of_reads_the_metadata():
    assert tta.views_of({}) == ("id",)
    assert tta.views_of({"tta_views": list(tta.ALL_VIEWS)}) == tta.ALL_VIEWS
    with pytest.raises(ValueError, match="unknown test-time views"):
        tta.views_of({"tta_views": ["id", "rot45"]})
    with pytest.raises(ValueError, match="must start with 'id'"):
        tta.views_of({"tta_views": ["h", "id"]})


def _png(pixels) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _standin_with_views(directory, views):
    import json

    from ml.testing import write_standin_model

    out = write_standin_model(directory)
    meta = json.loads((out / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps(dict(meta, tta_views=list(views))))
    return out


def test_serving_with_views_scores_the_same_lesion_and_draws_its_heat_where_it_is(tmp_path, settings):
    """Through ml.serving.classifier.predict, a model with all eight views: the stand-in's score depends
    only on colour, so every view agrees with the image as it is; and the heat map, averaged
    over views turned back, still lands on the red patch in the top-left corner."""
    from ml.serving import classifier

    image = np.zeros((224, 224, 3), dtype=np.uint8)
    image[:, :] = (200, 160, 140)
    image[16:80, 16:80] = (230, 40, 40)
    image = _png(image)
    results = {}
    for name, views in (("once", tta.IDENTITY), ("all", tta.ALL_VIEWS)):
        settings.SKINCARE_MODEL_DIR = str(_standin_with_views(tmp_path / name, views))
        classifier.reset()
        results[name] = classifier.predict(image)
    classifier.reset()
    assert results["all"].probability_malignant == pytest.approx(results["once"].probability_malignant, abs=1e-4)
    heat = results["all"].heatmap
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert row <= 2 and col <= 2, (row, col)
    np.testing.assert_allclose(heat, results["once"].heatmap, atol=1e-3)


def test_unknown_views_make_the_model_unavailable_not_a_crash(tmp_path, settings):
    from ml.serving import classifier

    settings.SKINCARE_MODEL_DIR = str(_standin_with_views(tmp_path / "bad", ["id", "rot45"]))
    classifier.reset()
    with pytest.raises(classifier.ModelUnavailable, match="unknown test-time views"):
        classifier.predict(_png(np.zeros((224, 224, 3), dtype=np.uint8)))
    classifier.reset()


def test_close_call_check_reads_the_metadata():
    check = {"views": list(tta.ALL_VIEWS), "temperature": 2.0, "logit_offset": -1.5}
    assert tta.close_call_check({}) is None
    assert tta.close_call_check({tta.CLOSE_CALL_KEY: check}) == {
        "views": tta.ALL_VIEWS,
        "temperature": 2.0,
        "logit_offset": -1.5,
    }
    with pytest.raises(ValueError, match="must average all eight views"):
        tta.close_call_check({tta.CLOSE_CALL_KEY: dict(check, views=["id", "h"])})
    with pytest.raises(ValueError, match="scores the image as it is"):
        tta.close_call_check({tta.CLOSE_CALL_KEY: check, "tta_views": list(tta.ALL_VIEWS)})
    with pytest.raises(ValueError, match="temperature must be positive"):
        tta.close_call_check({tta.CLOSE_CALL_KEY: dict(check, temperature=0)})
    with pytest.raises(ValueError, match="numeric temperature"):
        tta.close_call_check({tta.CLOSE_CALL_KEY: {"views": list(tta.ALL_VIEWS)}})


def test_a_broken_close_call_check_makes_the_model_unavailable_not_a_crash(tmp_path, settings):
    import json

    from ml.serving import classifier
    from ml.testing import write_standin_model

    out = write_standin_model(tmp_path / "bad", boundary_margin=0.5, close_call_check=True)
    meta = json.loads((out / "metadata.json").read_text())
    meta[tta.CLOSE_CALL_KEY]["temperature"] = -1
    (out / "metadata.json").write_text(json.dumps(meta))
    settings.SKINCARE_MODEL_DIR = str(out)
    classifier.reset()
    with pytest.raises(classifier.ModelUnavailable, match="temperature must be positive"):
        classifier.predict(_png(np.zeros((224, 224, 3), dtype=np.uint8)))
    classifier.reset()


def test_a_close_call_is_answered_by_the_eight_views_with_their_calibration(tmp_path, settings):
    """The stand-in with a margin and a check whose temperature is 2: a result close to the
    threshold is scored again in the eight views (the same score here: a uniform colour), and
    the answer is that score at temperature 2; far from the boundary, the first look stands.
    served_orientations (evaluation's path) gives what predict gives."""
    import json

    from ml.serving import classifier
    from ml.testing import write_standin_model

    out = write_standin_model(
        tmp_path / "m", threshold=0.6, uncertain_threshold=0.4, boundary_margin=0.5, close_call_check=True
    )
    meta = json.loads((out / "metadata.json").read_text())
    meta[tta.CLOSE_CALL_KEY]["temperature"] = 2.0
    (out / "metadata.json").write_text(json.dumps(meta))
    settings.SKINCARE_MODEL_DIR = str(out)
    settings.SKINCARE_CLOSE_CALL_CHECK = True
    classifier.reset()
    try:
        pngs, expected = [], []
        for red, blue, checked in ((140, 120, True), (240, 40, False)):  # logits 0.63 (close to 0.41) and 6.3
            pixels = np.zeros((224, 224, 3), dtype=np.uint8)
            pixels[:, :] = (red, 90, blue)
            pngs.append(_png(pixels))
            z = 8 * (red - blue) / 255
            result = classifier.predict(pngs[-1], use_gate=False)
            assert (result.near_boundary, result.views_averaged) == (checked, 8 if checked else 1)
            expected.append(1 / (1 + np.exp(-(z / 2.0 if checked else z))))
            assert result.probability_malignant == pytest.approx(expected[-1], abs=1e-4)
        from ml import preprocessing

        batch = np.stack([preprocessing.preprocess(b) for b in pngs])
        probabilities, near = classifier.served_orientations(classifier.get_model(), batch, orientations=tta.IDENTITY)
        np.testing.assert_allclose(probabilities[:, 0], expected, atol=1e-4)
        assert near[:, 0].tolist() == [True, False]
        settings.SKINCARE_CLOSE_CALL_CHECK = False  # the default: the first look answers
        classifier.reset()
        result = classifier.predict(pngs[0], use_gate=False)
        assert (result.near_boundary, result.views_averaged) == (True, 1)
        assert result.probability_malignant == pytest.approx(1 / (1 + np.exp(-8 * 20 / 255)), abs=1e-4)
    finally:
        classifier.reset()


def test_inference_threads_follow_the_setting(settings):
    """SKINCARE_INFERENCE_THREADS where set; 0 (the default): the CPUs the process may use, at most 4."""
    import os

    from ml.serving import classifier

    settings.SKINCARE_INFERENCE_THREADS = 3
    assert classifier.inference_threads() == 3
    settings.SKINCARE_INFERENCE_THREADS = 0
    assert classifier.inference_threads() == max(1, min(4, len(os.sched_getaffinity(0))))
