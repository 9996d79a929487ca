"""FRA-FER and its ablation: Shahabinejad, Wang, Yu, Tang, Li, "Toward Personalized Emotion Recognition: A
Face Recognition Based Attention Method for Facial Emotion Recognition", FG 2021 (Tables I-III, Fig. 4).

A face I goes through a trainable FER network and a frozen FR network (eqs. 1, 2)::

    H_FR_1, ..., H_FR_L     = F_FR(I; theta_FR)          frozen (:class:`FrozenFR`)
    H_FER_1, ..., H_FER_L'  = F_FER(I; theta_FER)        trainable (:class:`EfficientNetB0`)

and the p-th FR map steers the q-th FER map (:class:`FRAttention`)::

    S       = Interpolate(Sigmoid(Conv1x1(H_FR_p)))      (3)  1 x H_q x W_q
    Ĥ_att   = S * H_FER_q                                (4)  S broadcast over the C_q channels
    H_att   = Max(Ĥ_att, H_FER_q)                        (5)  element-wise

after which the FER network carries on from H_att. The paper's choice is p = q = 1 with EfficientNet-B0 as
both networks: S is 1 x 112 x 112 and H_FER_1 is 32 x 112 x 112 for a 224 x 224 face.

Layer indices are 1-based, as the paper's: for the FER network (torchvision's EfficientNet-B0) q = i is the
output of ``features[i - 1]`` (:data:`B0_FEATURE_SHAPES`: q = 1 is the stem convolution, 9 the 1280-channel
head convolution). For the FR network p = i is the i-th stage: for dlib's ResNet (the offline default,
:mod:`fer_pipeline.models.dlib_resnet`) the stages of its ``forward_features`` (1 ``stem`` 32 x 72 x 72, 2
``pool``, 3 ``level4``, ... 7 ``level0``; a stage name is accepted too); for a torchvision network (the
paper's FR net is B0 trained on VGGFace2) ``features[i - 1]``.

Every network reads ``batch["rgb"]``, (B, 3, H, W) RGB in [0, 1], and normalises for itself: ImageNet's mean
and standard deviation inside the FER network; for the FR network the face is resized to that network's
input (150 x 150 for dlib, with dlib's own normalisation; 224 x 224 and ImageNet's for a torchvision
network) and S is interpolated back to the FER map's size, so the two never need the same input size.

Table III's rows are the same parts (builders at the bottom): ``frafer_b0`` (no FR fusion, the baseline of
[14]), ``frafer_concat`` (the pooled FR descriptor concatenated with the FER's pooled 1280-d feature before the
classifier), three self-attention modules at FER layer q without FR (``frafer_cscsse``: scSE;
``frafer_csse``: sSE; ``frafer_ssce``: squeeze-and-excitation) and ``frafer``. Where the paper is silent this
module chooses, and each choice is a size (:class:`FRAFERSizes`): bilinear interpolation, PyTorch's default
initialisation of the attention convolution, the self-attention modules applied as their papers do (no eq. 5
max), dlib's descriptor concatenated unnormalised. docs/frafer.md lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from . import register_model, sizes_of
from .dlib_resnet import FEATURE_SHAPES as DLIB_FEATURE_SHAPES
from .dlib_resnet import INPUT_SIZE as DLIB_INPUT_SIZE
from .dlib_resnet import DESCRIPTOR_DIM as DLIB_DESCRIPTOR_DIM
from .dlib_resnet import DlibFaceResNet, read_dlib_network
from .parts import PixelNorm
from .pretrained import load_pretrained

__all__ = [
    "B0_FEATURE_DIM", "B0_FEATURE_SHAPES", "FRAFERSizes", "EfficientNetB0", "FrozenFR", "DlibFR", "TorchvisionFR",
    "build_frozen_fr", "FRAttention", "ChannelSE", "SpatialSE", "ConcurrentSCSE", "FRAFERNet", "VARIANTS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_INPUT_SIZE = 224
B0_FEATURE_DIM = 1280
# (channels, height, width) of EfficientNet-B0's map q = 1 .. 9 (features[q - 1]) at a 224 x 224 input.
B0_FEATURE_SHAPES = {1: (32, 112, 112), 2: (16, 112, 112), 3: (24, 56, 56), 4: (40, 28, 28), 5: (80, 14, 14),
                     6: (112, 14, 14), 7: (192, 7, 7), 8: (320, 7, 7), 9: (1280, 7, 7)}
DLIB_FR = "dlib_resnet"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# Config keys named in errors: where the study reads each file from.
FER_WEIGHTS_KEY = "studies.frafer.weights.fer"
FR_WEIGHTS_KEY = "studies.frafer.weights.fr"
DLIB_CONFIG_KEY = "models.dlib_face_resnet"


@dataclass(frozen=True)
class FRAFERSizes:
    """Sizes of the FRA-FER family; every variant accepts them all and ignores those of parts it lacks.

    The paper's: ``p = 1``, ``q = 1`` (eqs. 3-5 with the FR stem map and the FER's first map); the FER
    network is EfficientNet-B0 (torchvision's, with its ``dropout`` 0.2 before the classifier and
    ``stochastic_depth`` 0.2). This project's: ``fr_network`` (``dlib_resnet``, the FR net available offline,
    or the name of a torchvision model with ``features``, e.g. ``efficientnet_b0`` as the paper's),
    ``fr_input_size`` (None: the FR net's own, 150 for dlib, 224 for torchvision), ``interpolation`` of eq. 3
    (bilinear), ``se_ratio`` of SSCE (16, Hu et al.'s), ``scse_reduction`` of CSCSSE's channel branch (2, the
    official scSE code's). Files: ``fer_weights`` (a torchvision-style EfficientNet-B0 state dict, ImageNet-
    or AffectNet-trained; None: from scratch) and ``fr_weights`` (dlib's .dat, or a torchvision-style state
    dict for a torchvision FR net; None with dlib: config's ``models.dlib_face_resnet``)."""

    fr_network: str = DLIB_FR
    p: int | str = 1
    q: int = 1
    fr_input_size: int | None = None
    interpolation: str = "bilinear"
    dropout: float = 0.2
    stochastic_depth: float = 0.2
    se_ratio: int = 16
    scse_reduction: int = 2
    fer_weights: str | None = None
    fr_weights: str | None = None

    @classmethod
    def from_config(cls, sizes: Mapping[str, Any]) -> "FRAFERSizes":
        s = sizes_of(cls, sizes, "FRA-FER")
        if s.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {s.interpolation!r}: choose from {INTERPOLATIONS}")
        return s


def _layer_index(value: Any, names: list[str], what: str, valid: str) -> int:
    """A 1-based layer index (or a stage name in ``names``) -> the 0-based index; else an error naming the
    valid ones."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(names):
        return value - 1
    raise ValueError(f"{what} = {value!r}: the network has no such layer; valid: {valid}")


def _last_conv_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no convolution: not a feature stage")
    return convs[-1].out_channels


def _resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _resolve(path: str | Path) -> Path:
    """A config path: as given (relative to the working directory, the workflow's), else under the repo."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    from ..config import REPO_ROOT
    return REPO_ROOT / path if (REPO_ROOT / path).exists() else path


# ---------------------------------------------------------------------------------------------------------
# The FER network


class EfficientNetB0(nn.Module):
    """The FER network: torchvision's EfficientNet-B0 (Tan & Le 2019), built with ``weights=None`` (nothing is
    downloaded) and the parameter names of ``torchvision.models.efficientnet_b0`` (``features.*``,
    ``classifier.1.*``), so torchvision-style state dicts load as they are (:func:`load_pretrained`; the head
    is replaced when its classes differ). ``forward`` maps RGB in [0, 1] to logits, ImageNet normalisation
    inside. ``classifier_inputs`` widens the classifier for FR-FER feature concatenation."""

    head = "classifier"

    def __init__(self, num_classes: int, dropout: float = 0.2, stochastic_depth: float = 0.2,
                 classifier_inputs: int = B0_FEATURE_DIM):
        super().__init__()
        net = torchvision.models.efficientnet_b0(weights=None, dropout=dropout, stochastic_depth_prob=stochastic_depth)
        self.norm = PixelNorm(tuple(255 * m for m in IMAGENET_MEAN), tuple(255 * s for s in IMAGENET_STD))
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        linear = nn.Linear(classifier_inputs, num_classes)
        bound = 1.0 / math.sqrt(num_classes)  # torchvision's EfficientNet initialisation of its classifier
        nn.init.uniform_(linear.weight, -bound, bound)
        nn.init.zeros_(linear.bias)
        self.classifier[1] = linear

    @property
    def num_maps(self) -> int:
        return len(self.features)

    @staticmethod
    def map_index(q: Any) -> int:
        """The 0-based ``features`` index of the 1-based map ``q`` (an error naming the valid ones)."""
        valid = ", ".join(f"{i} ({'x'.join(map(str, shape))} at 224)" for i, shape in B0_FEATURE_SHAPES.items())
        return _layer_index(q, [str(i) for i in B0_FEATURE_SHAPES], "q (the FER map)",
                            f"q = 1 .. {len(B0_FEATURE_SHAPES)} of EfficientNet-B0: {valid}")

    def channels(self, index: int) -> int:
        return _last_conv_channels(self.features[index])

    def maps(self, x: Tensor, start: int, stop: int) -> Tensor:
        """``features[start:stop]`` applied to ``x`` (a normalised image when ``start`` is 0)."""
        for stage in self.features[start:stop]:
            x = stage(x)
        return x

    def pool(self, h: Tensor) -> Tensor:
        return self.avgpool(h).flatten(1)

    def forward(self, rgb: Tensor) -> Tensor:
        return self.classifier(self.pool(self.maps(self.norm(rgb), 0, self.num_maps)))


# ---------------------------------------------------------------------------------------------------------
# The frozen FR network


class FrozenFR(nn.Module):
    """A face-recognition network that never trains: ``requires_grad`` off, in eval mode whatever
    ``train()`` is called with (so a parent's ``.train()`` leaves its batch-norm statistics alone), and run
    under ``torch.no_grad``. Subclasses give ``stage_names``, :meth:`_stage` and :meth:`_descriptor`.
    ``source`` is the file its weights came from."""

    kind = ""
    descriptor_dim = 0

    def __init__(self, input_size: int):
        super().__init__()
        self.input_size = input_size
        self.source = ""

    def freeze(self, source: str | Path) -> "FrozenFR":
        self.source = str(source)
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "FrozenFR":
        return super().train(False)  # frozen: the running statistics never move

    @property
    def stage_names(self) -> list[str]:
        raise NotImplementedError

    def describe_stages(self) -> str:
        raise NotImplementedError

    def stage_index(self, p: Any) -> int:
        """The 0-based stage of the 1-based (or named) FR layer ``p``; an error naming the valid ones."""
        return _layer_index(p, self.stage_names, f"p (the {self.kind} FR map)", self.describe_stages())

    def channels(self, index: int) -> int:
        raise NotImplementedError

    def feature_map(self, rgb: Tensor, index: int) -> Tensor:
        """H_FR_p for RGB faces in [0, 1] of any size (resized to the network's input); only the stages up
        to ``index`` run."""
        with torch.no_grad():
            return self._stage(_resize(rgb, self.input_size), index)

    def descriptor(self, rgb: Tensor) -> Tensor:
        """The network's pooled face descriptor (B, descriptor_dim)."""
        with torch.no_grad():
            return self._descriptor(_resize(rgb, self.input_size))

    def _stage(self, x: Tensor, index: int) -> Tensor:
        raise NotImplementedError

    def _descriptor(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class DlibFR(FrozenFR):
    """dlib's face-recognition ResNet (:class:`DlibFaceResNet`, its own normalisation inside) as the frozen FR
    network: stages ``stem`` ... ``level0``, the 128-d descriptor."""

    kind = DLIB_FR
    descriptor_dim = DLIB_DESCRIPTOR_DIM

    def __init__(self, input_size: int | None = None):
        super().__init__(input_size or DLIB_INPUT_SIZE)
        self.net = DlibFaceResNet()

    @property
    def stage_names(self) -> list[str]:
        return list(DLIB_FEATURE_SHAPES)

    def describe_stages(self) -> str:
        return "p = " + ", ".join(f"{i} ({name}, {'x'.join(map(str, shape))} at 150)"
                                  for i, (name, shape) in enumerate(DLIB_FEATURE_SHAPES.items(), 1))

    def channels(self, index: int) -> int:
        return DLIB_FEATURE_SHAPES[self.stage_names[index]][0]

    def load(self, path: str | Path, config_key: str) -> "DlibFR":
        path = _resolve(path)
        if not path.is_file():
            raise FileNotFoundError(f"{config_key} = '{path}': no such file (dlib's face-recognition ResNet; "
                                    f"`make assets` fetches it into .cache/fr-models)")
        self.net.load_dlib(read_dlib_network(path))  # DlibFormatError naming the file and byte offset
        return self.freeze(path)

    def _stage(self, x: Tensor, index: int) -> Tensor:
        return self.net.forward_features(x, upto=self.stage_names[index])

    def _descriptor(self, x: Tensor) -> Tensor:
        return self.net(x)


class TorchvisionFR(FrozenFR):
    """A torchvision classification network with ``features`` (EfficientNet-B0 trained for identities on
    VGGFace2, as the paper's FR net, or any such state dict), ImageNet normalisation inside. Parameter names
    are torchvision's (``features.*``, ``classifier.*``), so its state dict loads as saved; the identity
    classifier is not used (its shape may differ from the 1000 built here: it is then left out)."""

    head = "classifier"

    def __init__(self, name: str, input_size: int | None = None):
        super().__init__(input_size or TORCHVISION_INPUT_SIZE)
        try:
            net = torchvision.models.get_model(name, weights=None)
        except (ValueError, KeyError):
            raise ValueError(f"fr_network {name!r}: not '{DLIB_FR}' nor a torchvision model "
                             f"(e.g. efficientnet_b0)") from None
        if not isinstance(getattr(net, "features", None), nn.Sequential):
            raise ValueError(f"fr_network {name!r}: a torchvision FR network must have a `features` sequence of "
                             f"stages (efficientnet_*, mobilenet_*, convnext_*, ...); {name} has none")
        self.kind = name
        self.norm = PixelNorm(tuple(255 * m for m in IMAGENET_MEAN), tuple(255 * s for s in IMAGENET_STD))
        self.features = net.features
        self.classifier = getattr(net, "classifier", nn.Identity())
        self.descriptor_dim = self.channels(len(self.features) - 1)

    @property
    def stage_names(self) -> list[str]:
        return [str(i) for i in range(1, len(self.features) + 1)]

    def describe_stages(self) -> str:
        return (f"p = 1 .. {len(self.features)} of {self.kind} (features[p - 1]; channels "
                f"{', '.join(str(self.channels(i)) for i in range(len(self.features)))})")

    def channels(self, index: int) -> int:
        return _last_conv_channels(self.features[index])

    def load(self, path: str | Path, config_key: str) -> "TorchvisionFR":
        path = _resolve(path)
        load_pretrained(self, path, config_key)  # ConfigError naming the key, the file and the bad parameters
        return self.freeze(path)

    def _stage(self, x: Tensor, index: int) -> Tensor:
        x = self.norm(x)
        for stage in self.features[:index + 1]:
            x = stage(x)
        return x

    def _descriptor(self, x: Tensor) -> Tensor:
        return self._stage(x, len(self.features) - 1).mean(dim=(2, 3))


def _default_dlib_path() -> str:
    from ..config import load
    return load()["models"]["dlib_face_resnet"]


def build_frozen_fr(sizes: FRAFERSizes, p: Any = None) -> tuple[FrozenFR, int | None]:
    """The frozen FR network of ``sizes`` and the 0-based stage of ``p`` (checked before any file is read),
    its weights from ``sizes.fr_weights`` (dlib: config's ``models.dlib_face_resnet`` when unset)."""
    if sizes.fr_network == DLIB_FR:
        fr: FrozenFR = DlibFR(sizes.fr_input_size)
    else:
        fr = TorchvisionFR(sizes.fr_network, sizes.fr_input_size)
    index = fr.stage_index(p) if p is not None else None
    if sizes.fr_weights is not None:
        fr.load(sizes.fr_weights, FR_WEIGHTS_KEY)
    elif isinstance(fr, DlibFR):
        fr.load(_default_dlib_path(), DLIB_CONFIG_KEY)
    else:
        raise ValueError(f"fr_network {sizes.fr_network!r} needs its weights ({FR_WEIGHTS_KEY}: a torchvision-style "
                         f"state dict): a frozen FR network with random weights recognises no one")
    return fr, index


# ---------------------------------------------------------------------------------------------------------
# Attention at the FER map q


class FRAttention(nn.Module):
    """FRA-FER's attention, eqs. 3-5: ``forward(h_fr, h_fer)`` returns (H_att, S) with

        S     = Interpolate(Sigmoid(Conv1x1(H_FR_p)))   (B, 1, H_q, W_q)      (3)
        H_att = Max(S * H_FER_q, H_FER_q)                 (B, C_q, H_q, W_q)    (4), (5)

    Conv1x1 is one filter over the C_p channels of the FR map, with a bias (PyTorch's default
    initialisation: the paper gives none); the sigmoid comes before the resize, as eq. 3 orders them."""

    def __init__(self, fr_channels: int, interpolation: str = "bilinear"):
        super().__init__()
        self.conv = nn.Conv2d(fr_channels, 1, kernel_size=1)
        self.interpolation = interpolation

    def attention(self, h_fr: Tensor, size: tuple[int, int]) -> Tensor:
        """S of eq. 3 at ``size`` (H_q, W_q)."""
        s = torch.sigmoid(self.conv(h_fr))
        if tuple(s.shape[-2:]) == tuple(size):
            return s
        corners = None if self.interpolation == "nearest" else False
        return F.interpolate(s, size=size, mode=self.interpolation, align_corners=corners)

    def forward(self, h_fr: Tensor, h_fer: Tensor) -> tuple[Tensor, Tensor]:
        s = self.attention(h_fr, tuple(h_fer.shape[-2:]))
        return torch.maximum(s * h_fer, h_fer), s  # eq. 4 (channel-wise product), eq. 5 (element-wise max)


class ChannelSE(nn.Module):
    """SSCE, Hu et al.'s squeeze-and-excitation: s = sigmoid(W2 ReLU(W1 GAP(U))), U rescaled per channel
    (W1: C -> C / ``ratio``, W2 back; both with bias). ``forward`` returns (output, None): no spatial map."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, u: Tensor) -> tuple[Tensor, None]:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(u.mean(dim=(2, 3))))))
        return u * s[:, :, None, None], None


class SpatialSE(nn.Module):
    """CSSE, Roy et al.'s sSE: q = sigmoid(Conv1x1_{C -> 1}(U)), every position of U rescaled by it.
    ``forward`` returns (output, q)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        q = torch.sigmoid(self.conv(u))
        return u * q, q


class ConcurrentSCSE(nn.Module):
    """CSCSSE, Roy et al.'s scSE as their official code computes it: max(cSE(U), sSE(U)), cSE with reduction
    ``reduction`` (2). ``forward`` returns (output, sSE's map)."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        self.cse = ChannelSE(channels, reduction)
        self.sse = SpatialSE(channels)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        channel, _ = self.cse(u)
        spatial, q = self.sse(u)
        return torch.maximum(channel, spatial), q


# ---------------------------------------------------------------------------------------------------------
# The networks of Tables I-III

VARIANTS = ("b0", "concat", "cscsse", "csse", "ssce", "frafer")
_SELF_ATTENTION = {"cscsse", "csse", "ssce"}


class FRAFERNet(nn.Module):
    """One network of Table III: the FER EfficientNet-B0 (``fer``), for ``frafer`` and ``concat`` a frozen FR
    network (``fr``), for ``frafer`` and the self-attention variants an attention module at FER map q
    (``attention``). ``forward(batch)`` maps ``batch["rgb"]`` (B, 3, H, W) in [0, 1] to logits;
    :meth:`pooled_features` gives the FER's pooled 1280-d feature (the AFEW video procedure),
    :meth:`attention_map` S, :meth:`attention_maps` what Fig. 4 shows. ``provenance`` says where the weights
    came from (``fer``: a file or ``scratch``; ``fr``: a file) and ``weights_note`` says it in a sentence."""

    fields = ("rgb",)
    head = "fer.classifier"

    def __init__(self, variant: str, num_classes: int, sizes: FRAFERSizes):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown FRA-FER variant {variant!r} ({', '.join(VARIANTS)})")
        self.variant, self.sizes = variant, sizes
        # Indices first (errors before any file is read), then the FR network, then the FER network (whose
        # classifier is wider by the FR descriptor for concat), then the attention, then the FER weights.
        self.q_index = EfficientNetB0.map_index(sizes.q) if variant in _SELF_ATTENTION | {"frafer"} else None
        self.fr: FrozenFR | None = None
        self.fr_index: int | None = None
        if variant in ("frafer", "concat"):
            self.fr, self.fr_index = build_frozen_fr(sizes, sizes.p if variant == "frafer" else None)
        fr_dim = self.fr.descriptor_dim if variant == "concat" else 0
        self.fer = EfficientNetB0(num_classes, sizes.dropout, sizes.stochastic_depth, B0_FEATURE_DIM + fr_dim)
        channels = self.fer.channels(self.q_index) if self.q_index is not None else 0
        self.attention: nn.Module | None = None
        if variant == "frafer":
            self.attention = FRAttention(self.fr.channels(self.fr_index), sizes.interpolation)
        elif variant == "cscsse":
            self.attention = ConcurrentSCSE(channels, sizes.scse_reduction)
        elif variant == "csse":
            self.attention = SpatialSE(channels)
        elif variant == "ssce":
            self.attention = ChannelSE(channels, sizes.se_ratio)
        if sizes.fer_weights is not None:
            load_pretrained(self.fer, _resolve(sizes.fer_weights), FER_WEIGHTS_KEY)
        self.provenance = {"fer": str(_resolve(sizes.fer_weights)) if sizes.fer_weights else "scratch",
                           "fr": self.fr.source if self.fr is not None else None}
        fer_note = (f"FER EfficientNet-B0 from {self.provenance['fer']}" if sizes.fer_weights
                    else f"FER EfficientNet-B0 trained from scratch ({FER_WEIGHTS_KEY} unset)")
        fr_note = (f"; frozen FR {self.fr.kind} from {self.fr.source}" if self.fr is not None else "")
        self.weights_note = fer_note + fr_note

    @staticmethod
    def _rgb(batch: Mapping[str, Tensor]) -> Tensor:
        rgb = batch["rgb"] if "rgb" in batch else None
        if rgb is None or rgb.ndim != 4 or rgb.shape[1] != 3:
            shape = None if rgb is None else tuple(rgb.shape)
            raise ValueError(f"FRA-FER networks read batch['rgb'] as (B, 3, H, W) RGB in [0, 1]; got {shape}")
        return rgb

    def attention_maps(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor | None]:
        """Fig. 4's columns: ``input`` (the RGB), ``attention`` (S, (B, 1, H_q, W_q); None without a spatial
        map), ``before`` (H_FER_q) and ``after`` (the map the FER network carries on with)."""
        rgb = self._rgb(batch)
        if self.q_index is None:
            raise ValueError(f"{self.variant}: no attention at a FER map (variants with one: frafer, cscsse, csse, "
                             f"ssce)")
        before = self.fer.maps(self.fer.norm(rgb), 0, self.q_index + 1)
        if self.variant == "frafer":
            after, s = self.attention(self.fr.feature_map(rgb, self.fr_index), before)
        else:
            after, s = self.attention(before)
        return {"input": rgb, "attention": s, "before": before, "after": after}

    def attention_map(self, batch: Mapping[str, Tensor]) -> Tensor:
        """S (B, 1, H_q, W_q): eq. 3 for ``frafer``, the spatial map of ``csse`` / ``cscsse``."""
        s = self.attention_maps(batch)["attention"]
        if s is None:
            raise ValueError(f"{self.variant}: its attention is per channel, it has no spatial map")
        return s

    def pooled_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The FER network's globally pooled feature (B, 1280), after the attention (the classifier's input
        but for the FR descriptor of ``concat``)."""
        if self.q_index is None:
            h = self.fer.maps(self.fer.norm(self._rgb(batch)), 0, self.fer.num_maps)
        else:
            h = self.fer.maps(self.attention_maps(batch)["after"], self.q_index + 1, self.fer.num_maps)
        return self.fer.pool(h)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        features = self.pooled_features(batch)
        if self.variant == "concat":
            features = torch.cat([features, self.fr.descriptor(self._rgb(batch))], dim=1)
        return self.fer.classifier(features)


def _build(variant: str, num_classes: int, sizes: Mapping[str, Any]) -> FRAFERNet:
    return FRAFERNet(variant, num_classes, FRAFERSizes.from_config(sizes))


@register_model
def frafer_b0(num_classes: int, **sizes) -> FRAFERNet:
    """No FR fusion [14]: EfficientNet-B0 alone"""
    return _build("b0", num_classes, sizes)


@register_model
def frafer_concat(num_classes: int, **sizes) -> FRAFERNet:
    """FR-FER feature concatenation: the pooled FR descriptor beside B0's 1280-d feature"""
    return _build("concat", num_classes, sizes)


@register_model
def frafer_cscsse(num_classes: int, **sizes) -> FRAFERNet:
    """Self-attention-CSCSSE [34]: scSE, max(cSE, sSE), at FER map q"""
    return _build("cscsse", num_classes, sizes)


@register_model
def frafer_csse(num_classes: int, **sizes) -> FRAFERNet:
    """Self-attention-CSSE [34]: sSE (spatial excitation) at FER map q"""
    return _build("csse", num_classes, sizes)


@register_model
def frafer_ssce(num_classes: int, **sizes) -> FRAFERNet:
    """Self-attention-SSCE [35]: squeeze-and-excitation at FER map q"""
    return _build("ssce", num_classes, sizes)


@register_model
def frafer(num_classes: int, **sizes) -> FRAFERNet:
    """FRA-FER: FR-based spatial attention, max(S * H_FER_q, H_FER_q) (the proposed method)"""
    return _build("frafer", num_classes, sizes)
