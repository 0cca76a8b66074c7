"""Test-time views (ml/tta.py): exact symmetries of the square, undone exactly, averaged as documented."""
import numpy as np
import pytest

from ml import tta


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
