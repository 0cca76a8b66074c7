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
