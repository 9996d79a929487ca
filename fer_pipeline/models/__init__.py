"""The networks of the studies, by name: ``build_model(name, num_classes, **sizes)``.

``MODELS`` maps a registered name to a :class:`ModelEntry` (its builder and a one-line description for
tables); ``@register_model`` adds a builder, whose docstring's first line is the description. The
``ablation`` study's five variants are Table I of Miyoshi, Nagata, Hashimoto, "Facial-Expression
Recognition from Video Using Enhanced Convolutional LSTM" (Table 2 of the Japanese version).

Every variant accepts the same size keywords (:class:`Sizes`), so a config can pass one block of sizes to
all five; a variant ignores the sizes of streams it does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence

from torch import nn

from .convlstm import ConvLSTMCell, ConvLSTMStream, EnhancedConvLSTMCell
from .fusion import MultiStreamNet, SumFusionHead
from .resnet_streams import TABLE1_BLOCKS, TABLE1_STEM, TABLE1_WIDTHS, Bottleneck, ResNetStream

__all__ = [
    "MODELS", "ModelEntry", "Sizes", "build_model", "register_model",
    "ConvLSTMCell", "EnhancedConvLSTMCell", "ConvLSTMStream", "Bottleneck", "ResNetStream",
    "MultiStreamNet", "SumFusionHead",
]


@dataclass(frozen=True)
class ModelEntry:
    """A registered network: ``entry(num_classes, **sizes)`` builds it."""

    name: str
    builder: Callable[..., nn.Module]
    description: str

    def __call__(self, num_classes: int, **sizes) -> nn.Module:
        return self.builder(num_classes, **sizes)


MODELS: dict[str, ModelEntry] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name; its docstring's first line is the description."""
    if not builder.__doc__ or not builder.__doc__.strip():
        raise ValueError(f"model builder '{builder.__name__}' needs a docstring: its first line is the description")
    if builder.__name__ in MODELS:
        raise ValueError(f"a model named '{builder.__name__}' is already registered")
    MODELS[builder.__name__] = ModelEntry(builder.__name__, builder, builder.__doc__.strip().splitlines()[0])
    return builder


def build_model(name: str, num_classes: int, **sizes) -> nn.Module:
    """The network ``name`` for ``num_classes`` classes; ``sizes`` are :class:`Sizes` fields."""
    try:
        entry = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; registered: {sorted(MODELS)}") from None
    return entry(num_classes, **sizes)


def sizes_of(cls, sizes: dict, family: str):
    """``cls(**sizes)`` for a sizes dataclass, or a TypeError naming the unknown keys and those ``family``
    (the networks ``cls`` sizes) takes: a config typo stops with the key, not with a dataclass traceback."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(sizes) - set(known))
    if unknown:
        raise TypeError(f"unknown model sizes {unknown}; the {family} networks take {known}")
    return cls(**sizes)


@dataclass(frozen=True)
class Sizes:
    """Sizes of the ablation networks. Defaults are the paper's where it gives them (kernels, Table 1);
    the rest are this project's choices, documented beside the modules that use them. Lists from a YAML
    config are accepted wherever a sequence is expected.

    input_size: H = W of the clips (the ConvLSTM peepholes are built for it); 112 is the ``ec112`` preset,
        OpenFace's aligned-face size.
    feature_dim: the size of every stream's feature, the width of the summed vector.
    convlstm_hidden, convlstm_kernels: one width and one kernel per ConvLSTM layer.
    norm_groups: GroupNorm groups of the Enhanced cell (reduced to a divisor of the layer width).
    resnet_stem, resnet_widths, resnet_blocks, resnet_width_multiplier: Table 1, and a scale for demos.
    fc_hidden, dropout: the hidden layers of the fully connected head and their dropout.
    stream_dropout: the probability of dropping a stream's whole feature in training (ModDrop; 0: the
        paper's plain sum); see :class:`SumFusionHead`.
    """

    input_size: int = 112
    feature_dim: int = 128
    convlstm_hidden: Sequence[int] = (16, 32, 64, 128)
    convlstm_kernels: Sequence[int] = (5, 5, 3, 3)
    norm_groups: int = 32
    resnet_stem: int = TABLE1_STEM
    resnet_widths: Sequence[Sequence[int]] = TABLE1_WIDTHS
    resnet_blocks: Sequence[int] = TABLE1_BLOCKS
    resnet_width_multiplier: float = 1.0
    fc_hidden: Sequence[int] = (128, 64)
    dropout: float = 0.5
    stream_dropout: float = 0.0


# Which batch field each stream reads, and its channels (see fer_pipeline.windows).
SEQUENCE_FIELDS = (("rgb", 3), ("flow", 2))
DYNAMIC_IMAGE_FIELDS = (("dyn_rgb", 3), ("dyn_flow", 2))


def _ablation_net(num_classes: int, sizes: dict, convlstm: str | None, resnet: bool) -> MultiStreamNet:
    """Two ConvLSTM streams of cell type ``convlstm`` (if any) and two ResNet streams (if ``resnet``)."""
    s = sizes_of(Sizes, sizes, "ablation")
    streams: dict[str, nn.Module] = {}
    if convlstm is not None:
        for field, channels in SEQUENCE_FIELDS:
            streams[field] = ConvLSTMStream(channels, s.convlstm_hidden, s.convlstm_kernels, s.input_size,
                                            s.feature_dim, convlstm, s.norm_groups)
    if resnet:
        for field, channels in DYNAMIC_IMAGE_FIELDS:
            streams[field] = ResNetStream(channels, s.feature_dim, s.resnet_stem, s.resnet_widths,
                                          s.resnet_blocks, s.resnet_width_multiplier)
    return MultiStreamNet(streams, num_classes, s.feature_dim, s.fc_hidden, s.dropout, s.stream_dropout)


@register_model
def ablation_a(num_classes: int, **sizes) -> MultiStreamNet:
    """(a) 2 ResNet streams (RGB and flow dynamic images)"""
    return _ablation_net(num_classes, sizes, convlstm=None, resnet=True)


@register_model
def ablation_b(num_classes: int, **sizes) -> MultiStreamNet:
    """(b) 2 conventional ConvLSTM streams (RGB and flow; no skip connections)"""
    return _ablation_net(num_classes, sizes, convlstm="conventional", resnet=False)


@register_model
def ablation_c(num_classes: int, **sizes) -> MultiStreamNet:
    """(c) 2 Enhanced ConvLSTM streams (RGB and flow; with skip connections)"""
    return _ablation_net(num_classes, sizes, convlstm="enhanced", resnet=False)


@register_model
def ablation_d(num_classes: int, **sizes) -> MultiStreamNet:
    """(d) 2 ResNet + 2 conventional ConvLSTM streams ((a) and (b))"""
    return _ablation_net(num_classes, sizes, convlstm="conventional", resnet=True)


@register_model
def ablation_e(num_classes: int, **sizes) -> MultiStreamNet:
    """(e) 2 ResNet + 2 Enhanced ConvLSTM streams ((a) and (c); the proposed method)"""
    return _ablation_net(num_classes, sizes, convlstm="enhanced", resnet=True)


# The fusion and nlstm studies' networks register themselves on import (after register_model exists).
from . import bilstm, c3d, frafer, resnet10, stc_nlstm, vgg_face  # noqa: E402,F401
