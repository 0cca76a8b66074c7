"""The one preprocessing function: every source type gives the same pixels."""

import io

import numpy as np
from PIL import Image

from ml import preprocessing


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), "RGB")


def test_bytes_path_and_pil_agree(tmp_path):
    img = _image()
    path = tmp_path / "x.png"
    img.save(path)
    from_path = preprocessing.preprocess(path)
    from_bytes = preprocessing.preprocess(path.read_bytes())
    from_pil = preprocessing.preprocess(Image.open(path))
    assert from_path.shape == (224, 224, 3) and from_path.dtype == np.float32
    assert np.array_equal(from_path, from_bytes) and np.array_equal(from_path, from_pil)
    assert 0 <= from_path.min() and from_path.max() <= 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 100, 100))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    upright = preprocessing.load_rgb(buf.getvalue())
    assert upright.size == (100, 200)
    top = np.asarray(upright)[10, 50]
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


def test_transparency_becomes_white_and_grey_becomes_rgb():
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert preprocessing.preprocess(rgba)[0, 0].tolist() == [255, 255, 255]
    grey = Image.new("L", (50, 50), 100)
    assert preprocessing.preprocess(grey)[0, 0].tolist() == [100, 100, 100]


def _dermoscope_field(width=400, height=300, skin=(225, 190, 160), lesion=(90, 60, 45)):
    """Skin seen through a round dermoscope field on a black surround, with a dark lesion in the middle."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot(xx - width / 2, yy - height / 2)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[r < width / 2 * 0.95] = skin
    pixels[r < height * 0.2] = lesion
    return Image.fromarray(pixels, "RGB")


def test_dark_corners_of_a_dermoscope_become_skin_and_the_lesion_stays():
    x = preprocessing.preprocess(_dermoscope_field())
    skin = np.array((225, 190, 160), dtype=np.float32)
    for corner in (x[:12, :12], x[:12, -12:], x[-12:, :12], x[-12:, -12:]):
        assert np.abs(corner.reshape(-1, 3).mean(axis=0) - skin).max() < 20  # black before
    assert np.array_equal(x[100:124, 100:124], np.full((24, 24, 3), (90, 60, 45), dtype=np.float32))


def test_images_without_dark_corners_are_left_alone():
    plain = Image.new("RGB", (300, 300), (225, 190, 160))
    plain.paste((90, 60, 45), (100, 100, 200, 200))
    assert np.array_equal(
        preprocessing.preprocess(plain), np.asarray(plain.resize((224, 224), preprocessing.RESAMPLE), dtype=np.float32)
    )
    # one dark corner (a lesion at the edge, a shadow) is not a dermoscope's field of view
    one_corner = plain.copy()
    one_corner.paste((20, 20, 20), (0, 0, 60, 60))
    assert np.array_equal(
        preprocessing.preprocess(one_corner),
        np.asarray(one_corner.resize((224, 224), preprocessing.RESAMPLE), dtype=np.float32),
    )
    # an image dark all over stays as dark, for the image gate to refuse
    black = Image.new("RGB", (300, 300), (5, 5, 5))
    assert preprocessing.preprocess(black).max() <= 5


def test_ph2_corners_are_painted_and_its_lesions_left_alone(ph2_root):
    """Over all 200 PH2 images (the dermatologists' lesion outlines say where the lesion is):
    most get their dark corners painted, and hardly any lesion pixel changes."""

    def luminance(a):
        return (a * (0.299, 0.587, 0.114)).sum(axis=-1)

    painted, lesion_changed = 0, []
    images = sorted((ph2_root / "images").glob("IMD*.jpg"))
    for image_path in images:
        mask_path = ph2_root / "lesion_masks" / f"{image_path.stem}_lesion.png"
        raw = np.asarray(preprocessing.resize_rgb(preprocessing.load_rgb(image_path)), dtype=np.float32)
        filled = preprocessing.preprocess(image_path)
        lesion = np.asarray(Image.open(mask_path).convert("L").resize((224, 224), Image.Resampling.NEAREST)) > 127
        changed = np.abs(filled - raw).max(axis=-1) > 3
        lesion_changed.append((changed & lesion).sum() / lesion.sum())
        corner = np.s_[:16, :16]
        painted += luminance(filled[corner]).mean() > 1.5 * luminance(raw[corner]).mean()
    assert len(images) == 200
    assert painted >= 0.75 * len(images)
    assert np.median(lesion_changed) == 0 and np.mean(lesion_changed) < 0.01


def test_training_reads_the_pixels_serving_reads(ph2_root, tmp_path):
    """train_model caches images as uint8: they must be serving's input rounded, not truncated
    (a PH2 image's painted corners are blended in float, so a cast alone would darken them)."""
    from ml.training.trainer import load_images

    paths = sorted((ph2_root / "images").glob("IMD*.jpg"))[:3]
    served = np.stack([preprocessing.preprocess(p) for p in paths])
    assert np.abs(served - np.round(served)).max() > 0.1  # these images do have fractional pixels
    for cache in (tmp_path, tmp_path):  # computed, then read back from the cache
        trained = load_images(paths, cache=cache, log=lambda m: None)
        assert trained.dtype == np.uint8
        assert np.abs(trained.astype(np.float32) - served).max() <= 0.5
