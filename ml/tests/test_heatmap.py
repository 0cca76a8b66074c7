"""The occlusion heat map's parts (ml/serving/heatmap.py), on arrays: which pixels each look covers, with
what colour, and how the score's fall becomes heat. The served map on real photos is in test_shipped_model."""

import numpy as np
import pytest

from ml.serving import heatmap


@pytest.mark.parametrize("size", [224, 225])
def test_the_patches_cover_every_pixel_exactly_once(size):
    image = np.full((size, size, 3), 100.0, dtype=np.float32)
    image[size // 3 : size // 2, size // 3 : size // 2] = 20.0  # a dark lesion; the frame stays skin
    covered = heatmap.occluded_images(image)
    assert covered.shape == (heatmap.OCCLUSION_GRID**2, size, size, 3)
    changed = (covered != image[None]).any(axis=-1)
    # each look covers one patch: its pixels take the skin colour (only the lesion's pixels change)
    patch_of_pixel = changed.argmax(axis=0)
    assert changed.sum(axis=0).max() == 1
    lesion = np.zeros((size, size), bool)
    lesion[size // 3 : size // 2, size // 3 : size // 2] = True
    assert changed.any(axis=0).tolist() == lesion.tolist()
    edges = heatmap.patch_edges(size)
    assert edges[0] == 0 and edges[-1] == size and (np.diff(edges) > 0).all()
    row, column = (
        np.searchsorted(edges, size // 3, side="right") - 1,
        np.searchsorted(edges, size // 3, side="right") - 1,
    )
    assert patch_of_pixel[size // 3, size // 3] == row * heatmap.OCCLUSION_GRID + column
    assert np.allclose(covered[patch_of_pixel[size // 3, size // 3], size // 3, size // 3], 100.0)


def test_the_skin_colour_is_the_frames_median_whatever_the_middle_holds():
    image = np.zeros((225, 225, 3), dtype=np.float32)
    image[:] = (200, 150, 130)
    image[20:205, 20:205] = (60, 30, 20)  # a lesion filling the middle
    image[:4, :30] = (255, 255, 255)  # a ruler's glare on a bit of the frame
    assert heatmap.skin_colour(image).tolist() == [200, 150, 130]


def test_heat_is_how_far_the_score_falls_and_never_a_rise():
    grid = heatmap.OCCLUSION_GRID
    occluded = np.full(grid * grid, 1.0)
    occluded[3] = -2.0  # covering patch (0, 3) makes the lesion look benign
    occluded[10] = 2.5  # covering patch (1, 2) makes it look worse: no heat there
    cam = heatmap.occlusion_map(1.0, occluded)
    assert cam.shape == (grid, grid) and cam.dtype == np.float32
    assert cam[0, 3] == pytest.approx(3.0) and cam[1, 2] == 0 and cam.sum() == pytest.approx(3.0)


def test_the_outline_is_the_largest_dark_region_with_its_holes_filled():
    from ml.reporting.outlines import dark_lesion_outline

    yy, xx = np.mgrid[:225, :225]
    image = np.zeros((225, 225, 3), dtype=np.float32)
    image[:] = (210, 160, 140)  # skin
    lesion = (yy - 120) ** 2 + (xx - 100) ** 2 < 50**2
    image[lesion] = (90, 50, 40)
    image[(yy - 120) ** 2 + (xx - 100) ** 2 < 10**2] = (200, 190, 180)  # a pale spot inside the lesion
    image[10:16, 200:206] = (60, 40, 30)  # a small dark speck elsewhere: not the lesion
    outline = dark_lesion_outline(image)
    assert outline is not None and not outline[12, 202]
    assert (outline == lesion).mean() > 0.99  # the pale spot is filled in
    assert heatmap.heat_share_inside(np.ones((8, 8)), outline) == pytest.approx(lesion.mean(), abs=0.02)


def test_no_outline_without_a_dark_region_of_lesion_size():
    from ml.reporting.outlines import dark_lesion_outline

    assert dark_lesion_outline(np.full((225, 225, 3), 150.0)) is None  # one colour
    speck = np.full((225, 225, 3), 200.0)
    speck[100:104, 100:104] = 40.0  # a dark speck of 0.03% of the image
    assert dark_lesion_outline(speck) is None
