"""The Lite0 port: weights read without torch, refused when unsafe, and right on real photos."""
import pickle

import numpy as np
import pytest
from PIL import Image

from ml.backbone import WeightsError, lite0_weights_path, pretrained_lite0, read_legacy_torch_state_dict

CAT_CLASSES = [281, 282, 285]  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def imagenet_lite0():
    return pretrained_lite0(include_top=True)


def _photo(name):
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def test_state_dict_has_every_lite0_tensor():
    state = read_legacy_torch_state_dict(lite0_weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    params = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert 4_600_000 < params < 4_700_000  # 4.7 M with the 1000-class head


def test_port_recognises_chelsea_and_coffee(imagenet_lite0):
    probs = imagenet_lite0.predict(np.stack([_photo("chelsea"), _photo("coffee")]), verbose=0)
    assert probs[0, CAT_CLASSES].sum() >= 0.85, probs[0, CAT_CLASSES]
    assert probs[1, ESPRESSO] >= 0.85, probs[1, ESPRESSO]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"weight": _Evil()}, f, protocol=2)
    with pytest.raises(WeightsError, match=r"refusing to load (__builtin__|builtins)\.print"):
        read_legacy_torch_state_dict(path)


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04zipfile", "zip-format"),
    (b"not a pickle at all", "not a readable state dict"),
])
def test_clear_error_for_other_files(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_legacy_torch_state_dict(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth"):
        read_legacy_torch_state_dict(tmp_path / "missing.pth")
