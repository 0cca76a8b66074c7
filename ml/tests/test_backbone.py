"""The Lite0 port: weights read without torch, refused when unsafe, and right on real photos."""

import pickle

import numpy as np
import pytest
from PIL import Image

from ml.model.backbone import WeightsError, lite0_weights_path, pretrained_lite0, read_legacy_torch_state_dict

CAT_CLASSES = [281, 282, 285]  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def imagenet_lite0():
    return pretrained_lite0(include_top=True)


def _photo(name):
    from skimage import data

    return np.asarray(
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )


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


def test_symmetric_padding_keeps_the_weights_and_moves_the_padded_edge():
    """--padding symmetric: the same checkpoint still recognises the photos (0.94 and 0.86 here), and
    the padding the stride-2 layers see moves from the bottom and right (TensorFlow's SAME) to the top
    and left. On a plain grey image only the stem outputs that read padding (0 after the input scaling,
    the grey is not) differ from the rest."""
    import keras

    model = pretrained_lite0(include_top=True, padding="symmetric")
    probs = model.predict(np.stack([_photo("chelsea"), _photo("coffee")]), verbose=0)
    assert probs[0, CAT_CLASSES].sum() >= 0.85 and probs[1, ESPRESSO] >= 0.85

    blank = np.full((1, 224, 224, 3), 200.0, dtype=np.float32)
    for padding, padded_row, padded_col in (("tf", -1, -1), ("symmetric", 0, 0)):
        net = pretrained_lite0(padding=padding)
        stem = keras.Model(net.input, net.get_layer("stem_conv").output).predict(blank, verbose=0)[0]
        assert stem.shape == (112, 112, 32)
        inside = stem[56, 56]
        rows = [r for r in range(112) if not np.allclose(stem[r, 56], inside, atol=1e-6)]
        cols = [c for c in range(112) if not np.allclose(stem[56, c], inside, atol=1e-6)]
        assert rows == [range(112)[padded_row]] and cols == [range(112)[padded_col]], (padding, rows, cols)
    with pytest.raises(ValueError, match="unknown padding 'reflect'"):
        pretrained_lite0(padding="reflect")


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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"PK\x03\x04zipfile", "zip-format"),
        (b"not a pickle at all", "not a readable state dict"),
    ],
)
def test_clear_error_for_other_files(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_legacy_torch_state_dict(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth"):
        read_legacy_torch_state_dict(tmp_path / "missing.pth")


def test_training_network_takes_the_padding():
    from ml.model.network import Network
    from ml.training.config import TrainConfig
    from ml.training.loop import network_spec

    for padding, expected in (("tf", False), ("symmetric", True)):
        net = Network(network_spec(TrainConfig(datasets=["unused"], padding=padding)))
        lower, upper = [layer.name for layer in net.lower.layers], [layer.name for layer in net.upper.layers]
        assert ("stem_conv_pad" in lower) is expected
        assert ("block11_dwconv_pad" in lower + upper) is expected  # block 11, the last stride 2


def _flip_symmetric_kernels(model) -> None:
    """Make every convolution kernel its own mirror image, up-down and left-right (the mean of its four flips):
    the network is then flip-equivariant exactly where its padding is the same on every side."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            kernel, *rest = layer.get_weights()
            kernel = (kernel + kernel[::-1] + kernel[:, ::-1] + kernel[::-1, ::-1]) / 4
            layer.set_weights([kernel, *rest])


@pytest.mark.parametrize(
    "image_size, padding, equivariant",
    [(224, "tf", False), (224, "symmetric", False), (225, "tf", True), (225, "symmetric", True)],
)
def test_an_odd_input_side_pads_every_edge_alike(image_size, padding, equivariant):
    """--image-size 225 (32k + 1): every stride-2 layer's input side is odd, so both paddings read k // 2 zeros
    on all four sides and no edge of the feature maps is the network's own. With mirror-image kernels the
    network then maps a flipped photo to the flipped feature map (the gate's lower map here) and to the same
    pooled features; at 224 one edge differs."""
    from ml.model.network import Network, NetworkSpec

    net = Network(NetworkSpec(padding=padding, image_size=image_size))
    for part in (net.lower, net.upper):
        _flip_symmetric_kernels(part)
    photo = np.asarray(
        Image.fromarray(np.uint8(_photo("chelsea"))).resize((image_size, image_size), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )[None]
    lower, pooled = np.asarray(net.lower(photo)), np.asarray(net.features(photo))
    assert lower.shape[1] == {224: 7, 225: 8}[image_size]
    for axis in (1, 2):  # upside down, and left to right
        turned = np.flip(photo, axis).copy()
        map_gap = np.abs(np.flip(np.asarray(net.lower(turned)), axis) - lower).max() / np.abs(lower).max()
        pooled_gap = np.abs(np.asarray(net.features(turned)) - pooled).max() / np.abs(pooled).max()
        assert bool(map_gap < 1e-4 and pooled_gap < 1e-4) is equivariant, (axis, map_gap, pooled_gap)


def test_where_the_network_is_split_changes_no_weight_or_its_order():
    """split_block only groups the layers into the lower part (whose map the gate reads) and the upper part:
    the weights, trainable ones included, come in the same order, so a checkpoint resumes across a change of
    split (ml.training.checkpoints.NOT_COMPARED) and resplit_model keeps every score."""
    from ml.model.network import Network, NetworkSpec

    def weights(split):
        net = Network(NetworkSpec(split_block=split))
        net.unfreeze_backbone()
        return [v.path for v in net.model.weights], [v.path for v in net.model.trainable_weights], net

    (all8, trainable8, net8), (all15, trainable15, net15) = weights(8), weights(15)
    assert all8 == all15 and trainable8 == trainable15
    assert net8.lower.output.shape[1:] == (14, 14, 80) and net15.lower.output.shape[1:] == (7, 7, 192)
