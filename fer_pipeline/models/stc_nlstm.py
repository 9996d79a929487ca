"""STC-NLSTM and its three baselines: Yu, Liu, Liu, Deng, "Spatio-temporal convolutional features with nested
LSTM for facial expression recognition", Neurocomputing 317 (2018), Table 2 and Sec. 4.2.

The paper's procedure (Sec. 3.2.2), for a sequence ``x`` and a 3D CNN of ``I`` convolutional layers::

    f_j      = 3DCNN_j(x)             j = 1..I   (the j-th conv layer's output, C x T x H_j x W_j)
    f_j^mspp = MSPP-norm(f_j)                     (T x C * sum(n^2) for n in 8, 4, 2: 18 x 5376 on CK+)
    h_j      = T-LSTM_j(f_j^mspp)                 (temporal dynamics of layer j)
    o        = C-LSTM(h_1, ..., h_I)              (across the layers: the multi-level features)

and a softmax on ``o``. Table 2 (CK+): I(64,64,18)-C(3,64)-BN-P2-C(3,64)-BN-P2-C(3,64)-C(3,64)-P2-C(3,64),
every convolution 3x3x3 with stride 1, every pooling 1x2x2 (the time axis is kept: MSPP sees all 18 steps
of every layer). The baselines of Sec. 4.2 are built from the same parts (:class:`STCBackbone`,
:class:`MSPPNorm`) and differ only in what follows them:

- ``stc``: the last conv layer's MSPP vectors (all steps) into the softmax classifier;
- ``stc_lstm``: the last conv layer's MSPP vectors into one LSTM;
- ``stc_slstm``: every conv layer's MSPP vectors summed ("sum fusion") into one LSTM;
- ``stc_nlstm``: one T-LSTM per conv layer, a C-LSTM over their outputs.

Where the paper is silent this module chooses, and each choice is a size (:class:`STCSizes`): a ReLU after
each convolution (the usual 3D CNN; Table 2 lists none), MSPP taken on that activated output before the
layer's pooling (Table 2 lists ``mspp_j`` at the conv layer's input size), no value normalisation inside
MSPP ("norm" is the dimension: Sec. 3.2.1 normalises "features of different sizes to the same dimension"),
LSTM widths, a two-layer ("stacked") T-LSTM, what a T-LSTM hands the C-LSTM (its top layer's last
step: ``tlstm_output``) and the order the C-LSTM reads the layers in (``clstm_order``). Weights are
initialised with Xavier's procedure, as the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import register_model, sizes_of

TABLE2_BATCH_NORM_AFTER = (1, 2)   # C(3,64)-BN after conv1 and conv2
TABLE2_POOL_AFTER = (1, 2, 4)      # P2 after conv1, conv2 and conv4
MSPP_GRIDS = (8, 4, 2)             # mspp_j [8, 4, 2]
TLSTM_OUTPUTS = ("last", "mean")
CLSTM_ORDERS = ("shallow_first", "deep_first")


@dataclass(frozen=True)
class STCSizes:
    """Sizes of the STC family. The paper gives: input 64 x 64 (``input_size``), the sequence length
    (``sequence_length``: CK+ 18, Oulu-CASIA and MMI 22), 5 conv layers (``conv_layers``; Fig. 10 sweeps 1-7)
    of 64 filters (``channels``) of 3x3x3 (``kernel``), batch norm after layers 1-2 and 1x2x2 pooling after
    layers 1, 2 and 4 (Table 2: ``batch_norm_after``, ``pool_after``, 1-based; entries beyond
    ``conv_layers`` are ignored), MSPP grids 8, 4, 2 (``mspp_grids``). This project chooses:
    ``lstm_hidden`` (every LSTM's width: the T-LSTMs, the C-LSTM and the baselines' LSTM), ``tlstm_layers``
    (the T-LSTM is "stacked LSTM units": 2), ``lstm_layers`` (the C-LSTM's and the baselines' LSTM),
    ``tlstm_output`` (``last``: the top layer's last step, which has read the whole sequence; ``mean``: the
    mean over steps), ``clstm_order`` (``shallow_first``: conv1's T-LSTM first, so the C-LSTM's last step,
    which the classifier reads, has just seen the deepest layer; ``deep_first`` the reverse) and
    ``dropout`` before the classifier (0: the paper names none)."""

    input_size: int = 64
    sequence_length: int = 18
    in_channels: int = 3
    conv_layers: int = 5
    channels: int = 64
    kernel: int = 3
    batch_norm_after: Sequence[int] = TABLE2_BATCH_NORM_AFTER
    pool_after: Sequence[int] = TABLE2_POOL_AFTER
    mspp_grids: Sequence[int] = MSPP_GRIDS
    lstm_hidden: int = 128
    tlstm_layers: int = 2
    lstm_layers: int = 1
    tlstm_output: str = "last"
    clstm_order: str = "shallow_first"
    dropout: float = 0.0

    @classmethod
    def from_config(cls, sizes: dict) -> "STCSizes":
        s = sizes_of(cls, sizes, "STC")
        if s.tlstm_output not in TLSTM_OUTPUTS:
            raise ValueError(f"tlstm_output {s.tlstm_output!r}: choose from {TLSTM_OUTPUTS}")
        if s.clstm_order not in CLSTM_ORDERS:
            raise ValueError(f"clstm_order {s.clstm_order!r}: choose from {CLSTM_ORDERS}")
        if s.conv_layers < 1:
            raise ValueError(f"conv_layers must be >= 1, got {s.conv_layers}")
        return s


def mspp_dimension(channels: int, grids: Sequence[int] = MSPP_GRIDS) -> int:
    """The length of one step's MSPP vector: C * sum(n^2) (64 * (64 + 16 + 4) = 5376 in Table 2)."""
    return channels * sum(n * n for n in grids)


class STCBackbone(nn.Module):
    """The 3D CNN of Table 2: ``layers`` conv layers ``Conv3d(k, stride 1, 'same' padding)`` [``-BN``]
    ``-ReLU`` [``-MaxPool3d(1x2x2)``]. :meth:`forward` returns every conv layer's output f_j (B, C, T, H_j,
    W_j), taken before the layer's pooling, so the time axis is never reduced."""

    def __init__(self, in_channels: int, layers: int, channels: int, kernel: int,
                 batch_norm_after: Sequence[int], pool_after: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList()
        self.pools = nn.ModuleList()
        for j in range(1, layers + 1):
            block = [nn.Conv3d(in_channels if j == 1 else channels, channels, kernel, padding=kernel // 2)]
            if j in batch_norm_after:
                block.append(nn.BatchNorm3d(channels))
            block.append(nn.ReLU(inplace=True))
            self.convs.append(nn.Sequential(*block))
            self.pools.append(nn.MaxPool3d((1, 2, 2)) if j in pool_after else nn.Identity())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for conv, pool in zip(self.convs, self.pools):
            x = conv(x)
            outputs.append(x)
            x = pool(x)
        return outputs


class MSPPNorm(nn.Module):
    """Multi-dimensional spatial pyramid pooling (Sec. 3.2.1): each step's C x a x a map is cut into n x n
    sub-regions per channel for every n of ``grids`` and each sub-region max-pooled:
    f (B, C, T, H, W) -> (B, T, C * sum(n^2)), the same length for every layer whatever its H and W. The
    vector holds the 8x8 grid's C*64 values first (channel-major), then the 4x4's, then the 2x2's. A map
    smaller than a grid (a sixth or seventh layer at 8 x 8 after a fourth pooling, Fig. 10) repeats its
    cells, as adaptive max pooling does."""

    def __init__(self, grids: Sequence[int] = MSPP_GRIDS):
        super().__init__()
        self.grids = tuple(grids)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        batch, channels, steps, height, width = f.shape
        per_step = f.transpose(1, 2).reshape(batch * steps, channels, height, width)
        pooled = [F.adaptive_max_pool2d(per_step, n).flatten(1) for n in self.grids]
        return torch.cat(pooled, dim=1).view(batch, steps, -1)


class LastStepLSTM(nn.Module):
    """An LSTM over a sequence (B, L, D) -> its top layer's output at the last step (B, H), or the mean of
    its outputs over the steps (``output="mean"``)."""

    def __init__(self, input_size: int, hidden: int, layers: int, output: str = "last"):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, num_layers=layers, batch_first=True)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(x)
        return outputs[:, -1] if self.output == "last" else outputs.mean(dim=1)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for convolutions, linear layers and LSTMs (the paper's
    initialisation); batch norm keeps its (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LSTM):
            for name, parameter in m.named_parameters():
                (nn.init.xavier_uniform_ if name.startswith("weight") else nn.init.zeros_)(parameter)


class STCNet(nn.Module):
    """One network of the family: the backbone, MSPP on every layer, then the ``head`` (``stc``,
    ``stc_lstm``, ``stc_slstm`` or ``stc_nlstm``: see the module docstring). Reads ``batch["rgb"]`` (B, T, 3,
    H, W) in [0, 1] and returns class logits (B, num_classes) (one logit per action unit for a multi-label
    task: the loss decides how they are read). ``self.layer_inputs`` names the conv layers (1-based) whose
    features reach the head, which a test checks for each variant."""

    fields = ("rgb",)
    HEADS = ("stc", "stc_lstm", "stc_slstm", "stc_nlstm")

    def __init__(self, head: str, num_classes: int, sizes: STCSizes):
        super().__init__()
        if head not in self.HEADS:
            raise ValueError(f"unknown STC head {head!r} ({', '.join(self.HEADS)})")
        s = sizes
        self.head, self.sizes = head, s
        self.backbone = STCBackbone(s.in_channels, s.conv_layers, s.channels, s.kernel, s.batch_norm_after,
                                    s.pool_after)
        self.mspp = MSPPNorm(s.mspp_grids)
        dim = mspp_dimension(s.channels, s.mspp_grids)
        last = s.conv_layers
        self.layer_inputs = {"stc": [last], "stc_lstm": [last], "stc_slstm": list(range(1, last + 1)),
                             "stc_nlstm": list(range(1, last + 1))}[head]
        if head == "stc":
            features = s.sequence_length * dim
        elif head in ("stc_lstm", "stc_slstm"):
            self.lstm = LastStepLSTM(dim, s.lstm_hidden, s.lstm_layers)
            features = s.lstm_hidden
        else:
            self.t_lstms = nn.ModuleList(LastStepLSTM(dim, s.lstm_hidden, s.tlstm_layers, s.tlstm_output)
                                         for _ in range(last))
            self.c_lstm = LastStepLSTM(s.lstm_hidden, s.lstm_hidden, s.lstm_layers)
            features = s.lstm_hidden
        self.dropout = nn.Dropout(s.dropout)
        self.classifier = nn.Linear(features, num_classes)
        xavier_init(self)

    def layer_features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """f_j^mspp (B, T, D) of the conv layers the head reads, in layer order."""
        outputs = self.backbone(rgb.transpose(1, 2))  # (B, T, C, H, W) -> (B, C, T, H, W)
        return [self.mspp(outputs[j - 1]) for j in self.layer_inputs]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rgb = batch["rgb"]
        if rgb.shape[1] != self.sizes.sequence_length and self.head == "stc":
            raise ValueError(f"stc reads sequences of {self.sizes.sequence_length} steps, got {rgb.shape[1]}")
        layers = self.layer_features(rgb)
        if self.head == "stc":
            o = layers[0].flatten(1)
        elif self.head == "stc_lstm":
            o = self.lstm(layers[0])
        elif self.head == "stc_slstm":
            o = self.lstm(torch.stack(layers).sum(dim=0))
        else:
            h = [t_lstm(f) for t_lstm, f in zip(self.t_lstms, layers)]
            if self.sizes.clstm_order == "deep_first":
                h = h[::-1]
            o = self.c_lstm(torch.stack(h, dim=1))  # (B, I, H): the C-LSTM steps over the layers
        return self.classifier(self.dropout(o))


@register_model
def stc(num_classes: int, **sizes) -> STCNet:
    """STC: the 3D CNN, its last conv layer's MSPP features into the softmax classifier"""
    return STCNet("stc", num_classes, STCSizes.from_config(sizes))


@register_model
def stc_lstm(num_classes: int, **sizes) -> STCNet:
    """STC-LSTM: the last conv layer's MSPP features into an LSTM"""
    return STCNet("stc_lstm", num_classes, STCSizes.from_config(sizes))


@register_model
def stc_slstm(num_classes: int, **sizes) -> STCNet:
    """STC-SLSTM: every conv layer's MSPP features summed into an LSTM"""
    return STCNet("stc_slstm", num_classes, STCSizes.from_config(sizes))


@register_model
def stc_nlstm(num_classes: int, **sizes) -> STCNet:
    """STC-NLSTM: a T-LSTM per conv layer, a C-LSTM across them (the proposed method)"""
    return STCNet("stc_nlstm", num_classes, STCSizes.from_config(sizes))
